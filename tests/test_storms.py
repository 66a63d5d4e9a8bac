"""Issue 22, item 5: storms of dropped streams. 1,000 streams (LLAMA_GRPC_STORM_STREAMS) are
dropped mid-flight at each hop: the gRPC client cancelling, an HTTP client of the REST bridge
disconnecting, an HTTP client of Envoy disconnecting. Each stream is dropped after its first
generated text, 16 at a time. Afterwards GetLoad must show every slot idle, nothing waiting and
the KV cache empty (the requests do not cache their prompts, so no cell may stay used), and the
server serves the next request. The soak (mixed requests with drops over minutes, resource
curves) is a separate command: `python -m bench.soak`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from cancel_harness import get_load, show, wait_load
from envoy_harness import EnvoyProcess
from grpc_harness import complete, completion_request
from llama.v1 import service_pb2_grpc
from rest.rest_harness import RestServer, serving

pytestmark = pytest.mark.slow
STREAMS = int(os.environ.get("LLAMA_GRPC_STORM_STREAMS", "1000"))
CONCURRENCY = 16
# Endless unless dropped; no prompt caching, so a dropped request leaves no cell behind.
BODY: dict[str, Any] = {"n_predict": 4096, "ignore_eos": True, "cache_prompt": False,
                        "stream": True}
TIMEOUT = httpx.Timeout(60.0, connect=10.0)


@pytest.fixture(scope="module")
def server(tiny_bpe_path: Path) -> Iterator[RestServer]:
    # ctx 8192 over 4 slots: every stream runs (none waits for cells) while it is dropped.
    with serving(RestServer(tiny_bpe_path, ctx=8192, parallel=4)) as srv:
        yield srv


@pytest.fixture(scope="module")
def stub(server: RestServer) -> Iterator[Any]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield service_pb2_grpc.LlamaServerStub(channel)


@pytest.fixture(scope="module")
def envoy(server: RestServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyProcess]:
    with EnvoyProcess.start([server.grpc_target], tmp_path_factory.mktemp("envoy")) as e:
        yield e


def storm(drop_one: Callable[[int], bool]) -> int:
    """Run STREAMS drops, CONCURRENCY at a time; how many streams had begun before the drop."""
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        return sum(pool.map(drop_one, range(STREAMS)))


def grpc_drop(stub: Any) -> Callable[[int], bool]:
    def drop(i: int) -> bool:
        call = stub.Completion(completion_request(prompt=f"storm {i}", **BODY), timeout=60)
        try:
            began = any(msg.content for msg in call)  # stops at the first text
        finally:
            call.cancel()
        return began
    return drop


def http_drop(base: str) -> Callable[[int], bool]:
    def drop(i: int) -> bool:
        with httpx.Client(base_url=base, timeout=TIMEOUT) as client, client.stream(
                "POST", "/completion", json={"prompt": f"storm {i}", **BODY}) as response:
            assert response.status_code == 200
            # Leaving the block unread closes the connection: the client has gone.
            return any(line.startswith("data: ") for line in response.iter_lines())
    return drop


def assert_all_idle(stub: Any) -> None:
    load = wait_load(stub, lambda x: x.n_processing == 0 and x.n_waiting == 0
                     and x.kv_cells_used == 0 and x.kv_cells_reserved == 0,
                     "every slot idle and the KV cache empty")
    assert load.idle_slots == load.total_slots, show(load)
    assert all(not s.busy and s.n_cells == 0 for s in load.slots), show(load)
    served = complete(stub, prompt="after the storm", n_predict=4)
    assert served.code == grpc.StatusCode.OK and served.final.tokens_predicted == 4


def test_grpc_clients_cancelling(stub: Any) -> None:
    assert storm(grpc_drop(stub)) == STREAMS
    assert_all_idle(stub)


def test_bridge_clients_disconnecting(server: RestServer, stub: Any) -> None:
    assert storm(http_drop(server.url)) == STREAMS
    assert_all_idle(stub)


def test_envoy_clients_disconnecting(envoy: EnvoyProcess, stub: Any) -> None:
    assert storm(http_drop(envoy.base_url)) == STREAMS
    assert_all_idle(stub)
    assert get_load(stub).n_processing == 0
