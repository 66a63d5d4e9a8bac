"""Priority and deadlines through the real service (issue 25, item 5): among waiting requests a
lower `priority` is admitted first, and a request whose gRPC deadline passes while it waits ends
with DEADLINE_EXCEEDED without ever taking a slot. One slot, so that admission order is visible;
every wait is on a message, the end of a call, or a GetLoad state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from cancel_harness import (
    ENDLESS,
    StreamReader,
    serve_next,
    wait_free,
    wait_load,
    wait_processing,
)
from grpc_harness import completion_request
from llama.v1 import server_pb2

pytestmark = pytest.mark.slow
Open = Callable[[Any], StreamReader]


@pytest.fixture(scope="module")
def stub(one_slot_stub: Any) -> Any:
    return one_slot_stub


def _hold_the_slot(stub: Any, open_stream: Open) -> tuple[StreamReader, str]:
    holder = open_stream(stub.Completion(completion_request(prompt="Holder", **ENDLESS)))
    first = holder.first()
    holder.first_content()
    return holder, first.id


def test_a_lower_priority_value_is_admitted_first(stub: Any, open_stream: Open) -> None:
    holder, holder_id = _hold_the_slot(stub, open_stream)
    body = {"n_predict": 8, "temperature": 0.0}
    late = open_stream(stub.Completion(completion_request(prompt="Late", priority=5, **body)))
    wait_processing(stub, 1, n_waiting=1)
    urgent = open_stream(stub.Completion(completion_request(prompt="Urgent", priority=-1,
                                                            **body)))
    wait_processing(stub, 1, n_waiting=2)  # both wait, the later one with the lower value

    assert stub.Cancel(server_pb2.CancelRequest(id=holder_id), timeout=10).found
    assert holder.end() == grpc.StatusCode.CANCELLED
    urgent.first()  # admitted: the slot is urgent's until it ends
    assert late.messages == [], "the request with the higher priority value went first"
    assert urgent.end() == grpc.StatusCode.OK
    assert late.end() == grpc.StatusCode.OK and late.messages[-1].stop
    load = wait_load(stub, lambda ld: ld.n_processing == ld.n_waiting == 0, "idle")
    assert load.kv_cells_reserved == 0


def test_a_deadline_that_passes_in_the_queue_never_takes_the_slot(stub: Any,
                                                                  open_stream: Open) -> None:
    holder, holder_id = _hold_the_slot(stub, open_stream)
    waiting = open_stream(stub.Completion(completion_request(prompt="In a hurry", n_predict=4),
                                          timeout=1.0))
    assert waiting.end() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert waiting.messages == [], "the request was admitted"
    load = wait_load(stub, lambda ld: ld.n_waiting == 0, "the expired request is gone")
    assert load.n_processing == 1 and load.slots[0].busy  # the holder still runs

    assert stub.Cancel(server_pb2.CancelRequest(id=holder_id), timeout=10).found
    assert holder.end() == grpc.StatusCode.CANCELLED
    wait_free(stub)
    serve_next(stub)
