"""Cancellation at every stage of a request (issue 15), seen through GetLoad: queued, in the
middle of its prompt, in the middle of decoding, with stream = false, and after its last token.
Each case ends with the engine idle, the slot's KV cells freed (or, for a request that never
had a slot, nothing reserved) and the next request served normally.

One server, -np 1 (every request goes to slot 0, a second one waits), small batches (a long
prompt takes many decode steps), --context-shift (an ENDLESS generation never ends by itself,
so no case depends on how fast the model is). Every wait is on an event: a received message,
the end of a call, or a GetLoad state, each bounded by a deadline.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cancel_harness import (
    ENDLESS,
    StreamReader,
    get_load,
    has_content,
    serve_next,
    slot,
    stream_readers,
    wait_free,
    wait_load,
    wait_processing,
)
from grpc_harness import ServiceProcess, complete, completion_request, running_service
from llama.v1 import server_pb2

pytestmark = pytest.mark.slow

LONG_PROMPT = [1000 + (i * 37) % 3000 for i in range(1500)]
"""~1,500 token ids (under the 2,048-cell slot): ~94 decode steps of 16 tokens."""

Open = Callable[[Any], StreamReader]


@pytest.fixture(scope="module")
def service(tiny_bpe_path: Path) -> Iterator[ServiceProcess]:
    with running_service(tiny_bpe_path, "-b", "16", "-ub", "16", "--context-shift",
                         ctx=2048, parallel=1) as svc:
        yield svc


@pytest.fixture(scope="module")
def stub(service: ServiceProcess) -> Any:
    return service.stub()


@pytest.fixture()
def open_stream(stub: Any) -> Iterator[Open]:
    with stream_readers() as open_reader:
        yield open_reader
    # Whatever the test did, the server must be idle for the next one.
    wait_load(stub, lambda ld: ld.n_processing == ld.n_waiting == 0, "idle after the test")


def cancel_by_id(stub: Any, reader: StreamReader, gen_id: str) -> None:
    """Cancel RPC: found, and the stream ends with a cancelled_error message and CANCELLED."""
    assert stub.Cancel(server_pb2.CancelRequest(id=gen_id), timeout=10).found
    assert reader.end() == grpc.StatusCode.CANCELLED, reader.details
    last = reader.messages[-1]
    assert last.stop and last.id == gen_id
    assert last.error.code == 499 and last.error.type == "cancelled_error"


def assert_cancelled_by_client(reader: StreamReader) -> None:
    reader.cancel()
    assert reader.end() == grpc.StatusCode.CANCELLED, reader.details


# -- queued -----------------------------------------------------------------------------------
def test_a_request_cancelled_while_queued_never_takes_the_slot(stub: Any,
                                                              open_stream: Open) -> None:
    a = open_stream(stub.Completion(completion_request(prompt="Request A", **ENDLESS)))
    a_id = a.first().id
    a.first_content()
    b = open_stream(stub.Completion(completion_request(prompt="Request B", n_predict=8,
                                                       temperature=0.0)))
    load = wait_processing(stub, 1, n_waiting=1)
    assert load.idle_slots == 0 and slot(load, 0).busy

    assert_cancelled_by_client(b)
    load = wait_load(stub, lambda ld: ld.n_waiting == 0, "the queued request is gone")
    assert load.n_processing == 1 and slot(load, 0).busy  # A still runs
    assert b.messages == [], "the cancelled queued request was admitted"
    assert all(m.id == a_id for m in a.messages)

    cancel_by_id(stub, a, a_id)
    wait_free(stub)
    serve_next(stub)


def test_cancelling_a_request_whose_second_prompt_is_queued(stub: Any,
                                                           open_stream: Open) -> None:
    """Two prompts, one slot: the second waits for the first. Cancel{id} stops both: the
    running one frees its slot, the queued one never takes it."""
    r = open_stream(stub.Completion(completion_request(prompt=["first", "second"], **ENDLESS)))
    gen_id = r.first().id
    wait_processing(stub, 1, n_waiting=1)
    cancel_by_id(stub, r, gen_id)
    wait_free(stub)
    # The queued prompt may end with its own cancelled_error message, and nothing else.
    second = [m for m in r.messages if m.index == 1]
    assert all(m.HasField("error") for m in second), "the queued prompt was admitted"
    serve_next(stub)


# -- in the middle of the prompt --------------------------------------------------------------
@pytest.mark.parametrize("how", ["call", "rpc"])
def test_cancel_in_the_middle_of_the_prompt(stub: Any, open_stream: Open, how: str) -> None:
    # cache_prompt off: a prompt cached by an earlier run would not be evaluated again.
    r = open_stream(stub.Completion(completion_request(prompt=LONG_PROMPT, cache_prompt=False,
                                                       **ENDLESS)))
    first = r.first()  # admitted: the prompt's ~94 decode steps start now
    assert first.id_slot == 0 and not has_content(first)
    if how == "call":
        assert_cancelled_by_client(r)
    else:
        cancel_by_id(stub, r, first.id)
    wait_free(stub)
    # The one check here that rests on a margin, not an event: the prompt takes ~94 decode
    # steps (~0.85 s on 2 CPU cores), the cancel lands within a step or two of being sent.
    assert not any(has_content(m) for m in r.messages), "the prompt ended before the cancel"
    serve_next(stub)


# -- in the middle of decoding ----------------------------------------------------------------
@pytest.mark.parametrize("how", ["call", "rpc"])
def test_cancel_in_the_middle_of_decoding(stub: Any, open_stream: Open, how: str) -> None:
    r = open_stream(stub.Completion(completion_request(prompt="Decode for a while", **ENDLESS)))
    gen_id = r.first().id
    r.first_content()
    load = get_load(stub)
    assert load.n_processing == 1 and slot(load, 0).busy and slot(load, 0).n_cells > 0
    assert load.kv_cells_reserved > 0
    if how == "call":
        assert_cancelled_by_client(r)
    else:
        cancel_by_id(stub, r, gen_id)
        # The id is gone once the generation ended.
        assert not stub.Cancel(server_pb2.CancelRequest(id=gen_id), timeout=10).found
    wait_free(stub)
    serve_next(stub)


# -- stream = false ---------------------------------------------------------------------------
def test_cancel_a_non_streamed_request(stub: Any, open_stream: Open) -> None:
    """With stream = false the client has no id until the answer: it cancels the call."""
    r = open_stream(stub.Completion(completion_request(prompt="Answer at the end", stream=False,
                                                       **ENDLESS)))
    load = wait_processing(stub, 1)
    assert slot(load, 0).busy
    assert_cancelled_by_client(r)
    assert r.messages == []
    wait_free(stub)
    serve_next(stub)


# -- after the last token ---------------------------------------------------------------------
def test_cancel_after_the_last_token_changes_nothing(stub: Any, open_stream: Open) -> None:
    done = complete(stub, timeout=60, prompt="A request that ends by itself", n_predict=6,
                    temperature=0.0)
    assert done.code == grpc.StatusCode.OK, done.details
    assert done.final.stop_type == "limit"
    before = wait_load(stub, lambda ld: ld.n_processing == 0 and not slot(ld, 0).busy,
                       "the request ended")
    assert before.n_waiting == 0 and before.kv_cells_reserved == 0
    assert slot(before, 0).n_cells > 0, "a finished request keeps its prompt cached"
    assert before.kv_cells_used == slot(before, 0).n_cells

    assert not stub.Cancel(server_pb2.CancelRequest(id=done.final.id), timeout=10).found
    assert get_load(stub) == before, "a Cancel that found nothing changed the engine's state"
    serve_next(stub)
