"""The REST bridge turns a dropped HTTP connection into a cancelled gRPC call, at every stage:
an SSE stream closed after its first event (native and chat), a non-streamed request dropped
while it generates, a request dropped while it waits for a slot. GetLoad, asked over gRPC of
the same service, shows the slot idle and its KV cells freed; the next HTTP request is served.

One `llama-grpc-server` (gRPC plus its bridge child), -np 1 and --context-shift: every request
goes to slot 0 and an ENDLESS generation never ends by itself. The non-streamed and queued cases
use a raw socket, closed once GetLoad shows the request where the test wants it.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from cancel_harness import (
    DEADLINE_S,
    ENDLESS,
    get_load,
    slot,
    stream_readers,
    wait_free,
    wait_load,
    wait_processing,
)
from grpc_harness import completion_request
from llama.v1 import service_pb2_grpc
from rest_harness import RestServer, serving

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tiny_bpe_path: Path) -> Iterator[RestServer]:
    with serving(RestServer(tiny_bpe_path, "--context-shift", ctx=2048, parallel=1)) as srv:
        yield srv


@pytest.fixture(scope="module")
def stub(server: RestServer) -> Iterator[Any]:
    """gRPC to the service behind the bridge, for GetLoad."""
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield service_pb2_grpc.LlamaServerStub(channel)


@pytest.fixture()
def http(server: RestServer, stub: Any) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=DEADLINE_S) as client:
        yield client
    wait_load(stub, lambda ld: ld.n_processing == ld.n_waiting == 0, "idle after the test")


def next_event(lines: Iterator[str]) -> Any:
    """The next SSE event of `lines` (a response's iter_lines()). The caller keeps `lines`
    alive: an iterator dropped half-way is closed, and httpx then closes the connection."""
    for line in lines:
        if line.startswith("data: "):
            return json.loads(line[len("data: "):])
    raise AssertionError("the stream ended without an event")


def raw_post(server: RestServer, path: str, body: dict[str, Any]) -> socket.socket:
    """Send one HTTP/1.1 POST on a socket of our own and leave the answer unread."""
    data = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE_S)
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
                 .encode() + data)
    return sock


def serve_next(http: httpx.Client, stub: Any) -> None:
    """A short request over HTTP is answered in full from slot 0, which then keeps its cache."""
    r = http.post("/completion", json={"prompt": "And now a short one", "n_predict": 4,
                                       "temperature": 0})
    assert r.status_code == 200, r.text
    assert r.json()["tokens_predicted"] == 4 and r.json()["id_slot"] == 0
    load = wait_load(stub, lambda ld: ld.n_processing == 0 and not slot(ld, 0).busy,
                     "the short request ended")
    assert slot(load, 0).n_cells > 0


# -- SSE streams closed by the client ---------------------------------------------------------
def test_closing_a_native_sse_stream_cancels_the_generation(http: httpx.Client,
                                                           stub: Any) -> None:
    body = {"prompt": "Stream until the reader leaves", "stream": True, **ENDLESS}
    with http.stream("POST", "/completion", json=body) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        event = next_event(lines)
        assert event["stop"] is False and r.headers["x-request-id"] and event["tokens"]
        load = get_load(stub)
        assert load.n_processing == 1 and slot(load, 0).busy
    # Leaving the block closes the response with its body unread: httpx drops the connection.
    wait_free(stub)
    serve_next(http, stub)


def test_closing_a_chat_sse_stream_cancels_the_generation(http: httpx.Client,
                                                         stub: Any) -> None:
    body = {"messages": [{"role": "user", "content": "Talk until I hang up"}],
            "stream": True, **ENDLESS}
    with http.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        event = next_event(lines)  # sent when the request is admitted into the slot
        assert event["object"] == "chat.completion.chunk"
        assert event["choices"][0]["delta"]["role"] == "assistant"
        assert get_load(stub).n_processing == 1
    wait_free(stub)
    serve_next(http, stub)


# -- connections dropped before any answer ----------------------------------------------------
def test_dropping_a_non_streamed_request_cancels_the_generation(
        server: RestServer, http: httpx.Client, stub: Any) -> None:
    sock = raw_post(server, "/completion", {"prompt": "Answer at the end", **ENDLESS})
    try:
        load = wait_processing(stub, 1)
        assert slot(load, 0).busy
    finally:
        sock.close()
    wait_free(stub)
    serve_next(http, stub)


@pytest.mark.parametrize("stream", [True, False])
def test_dropping_a_queued_request_never_takes_the_slot(
        server: RestServer, http: httpx.Client, stub: Any, stream: bool) -> None:
    with stream_readers() as open_stream:
        runner = open_stream(stub.Completion(completion_request(prompt="Occupy", **ENDLESS)))
        runner_id = runner.first().id
        runner.first_content()
        sock = raw_post(server, "/completion",
                        {"prompt": "Wait in line", "n_predict": 8, "stream": stream})
        try:
            wait_processing(stub, 1, n_waiting=1)
        finally:
            sock.close()
        load = wait_load(stub, lambda ld: ld.n_waiting == 0, "the queued request is gone")
        assert load.n_processing == 1 and slot(load, 0).busy  # still the runner's
        # The runner, stopped through the bridge's own /cancel.
        r = http.post("/cancel", json={"id": runner_id})
        assert r.status_code == 200 and r.json() == {"found": True}
        assert runner.end() == grpc.StatusCode.CANCELLED
    wait_free(stub)
    serve_next(http, stub)
