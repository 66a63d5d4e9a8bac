"""Admission through the real service (issue 15): a shared KV cache admits a request only when
its reservation (prompt + n_predict, capped at a slot's context) fits beside the running ones,
so an admitted request is never failed for lack of cells; --max-queue bounds the waiting queue
(RESOURCE_EXHAUSTED beyond it); the server's -n is the n_predict of requests that set none and
generation_settings reports the value used. Every wait is on a GetLoad state or a message,
bounded by a deadline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cancel_harness import ENDLESS, StreamReader, wait_load
from grpc_harness import ServiceProcess, complete, completion_request, running_service
from llama.v1 import server_pb2

pytestmark = pytest.mark.slow
Open = Callable[[Any], StreamReader]
N_CTX = 512
N_PREDICT_CAP = 1000  # -n: an unlimited request reserves a whole slot context (512 cells)


@pytest.fixture(scope="module")
def shared(tiny_bpe_path: Path) -> Iterator[ServiceProcess]:
    # Two slots on one unified cache of 512 cells: each slot may use all 512 positions.
    with running_service(tiny_bpe_path, "--kv-unified", "--context-shift", "--max-queue", "1",
                         "-n", str(N_PREDICT_CAP), ctx=N_CTX, parallel=2) as svc:
        yield svc


def test_the_servers_n_predict_is_the_default_and_is_reported(shared: ServiceProcess) -> None:
    stub = shared.stub()
    props = stub.GetProps(server_pb2.GetPropsRequest(), timeout=10)
    assert props.default_generation_settings.params.n_predict == N_PREDICT_CAP
    r = complete(stub, prompt="Capped", n_predict=3, temperature=0.0)
    assert r.code == grpc.StatusCode.OK
    assert r.messages[-1].generation_settings.n_predict == 3


def test_a_request_that_does_not_fit_beside_the_running_ones_waits_then_runs(
        shared: ServiceProcess, open_stream: Open) -> None:
    stub = shared.stub()
    # A: unlimited, so within -n 1000 it reserves a whole slot context, all 512 cells. B needs
    # its prompt + 100 = 300 cells: it waits although a slot is idle, until A is cancelled.
    a = open_stream(stub.Completion(completion_request(prompt=[1000 + i for i in range(200)],
                                                       **ENDLESS)))
    a_id = a.first().id
    b = open_stream(stub.Completion(completion_request(
        prompt=[2000 + i for i in range(200)], n_predict=100, ignore_eos=True, temperature=0.0)))
    load = wait_load(stub, lambda ld: ld.n_processing + ld.n_waiting == 2, "B is in")
    assert load.n_processing == 1 and load.n_waiting == 1, "B was admitted beside A"
    assert load.idle_slots == 1 and load.kv_cells_reserved == N_CTX
    assert b.messages == []

    assert stub.Cancel(server_pb2.CancelRequest(id=a_id), timeout=10).found
    assert a.end() == grpc.StatusCode.CANCELLED
    assert b.end() == grpc.StatusCode.OK
    final = b.messages[-1]
    assert final.stop and not final.HasField("error") and final.tokens_predicted == 100


def test_a_full_queue_is_resource_exhausted(shared: ServiceProcess, open_stream: Open) -> None:
    stub = shared.stub()
    body = {"prompt": [1000 + i for i in range(300)], **ENDLESS}
    a = open_stream(stub.Completion(completion_request(**body)))
    a_id = a.first().id
    b = open_stream(stub.Completion(completion_request(**body)))  # waits: no cells left
    wait_load(stub, lambda ld: ld.n_waiting == 1, "B waits")
    c = complete(stub, prompt="One too many", n_predict=2)
    assert c.code == grpc.StatusCode.RESOURCE_EXHAUSTED, (c.code, c.details)
    assert "--max-queue" in c.details and c.messages == []
    assert stub.Cancel(server_pb2.CancelRequest(id=a_id), timeout=10).found
    b_first = b.first()
    assert stub.Cancel(server_pb2.CancelRequest(id=b_first.id), timeout=10).found
    assert a.end() == b.end() == grpc.StatusCode.CANCELLED
    wait_load(stub, lambda ld: ld.n_processing == ld.n_waiting == 0, "idle")


def test_a_prompt_that_can_never_fit_is_refused_up_front(shared: ServiceProcess) -> None:
    r = complete(shared.stub(), prompt=[1000 + i for i in range(N_CTX)], n_predict=1)
    assert r.code == grpc.StatusCode.INVALID_ARGUMENT and r.messages == []
    assert "context size" in r.details and str(N_CTX) in r.details
