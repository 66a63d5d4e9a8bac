"""Client request ids (issue 25, item 1) through the real service: a client's `request_id` is
the generation's id, sent as the initial metadata `x-request-id` before any message and as `id`
in every message; a second request with an id in flight is refused with ALREADY_EXISTS; Cancel
takes it, for a `stream: false` call too; a malformed id is INVALID_ARGUMENT. Every wait is on
a message, the end of a call, or a GetLoad state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from cancel_harness import ENDLESS, StreamReader, serve_next, wait_free, wait_load
from grpc_harness import chat_request, complete, completion_request
from llama.v1 import server_pb2

pytestmark = pytest.mark.slow
Open = Callable[[Any], StreamReader]


@pytest.fixture(scope="module")
def stub(one_slot_stub: Any) -> Any:
    return one_slot_stub


def _request_id_header(call: Any) -> str:
    return str(dict(call.initial_metadata())["x-request-id"])


def test_the_clients_id_is_the_generations_id(stub: Any) -> None:
    call = stub.Completion(completion_request(prompt="Hello", n_predict=3, temperature=0.0,
                                              request_id="client-42"), timeout=30)
    assert _request_id_header(call) == "client-42"  # before reading any message
    messages = list(call)
    assert messages and all(m.id == "client-42" for m in messages)
    chat = stub.ChatCompletion(chat_request(messages=[{"role": "user", "content": "Hi"}],
                                            max_tokens=2, request_id="chat-7"), timeout=30)
    assert _request_id_header(chat) == "chat-7"
    assert all(m.id == "chat-7" for m in chat)


def test_a_minted_id_comes_as_metadata_too(stub: Any) -> None:
    call = stub.Completion(completion_request(prompt="Hello", n_predict=2, stream=False),
                           timeout=30)
    minted = _request_id_header(call)
    assert minted.startswith("cmpl-")
    assert [m.id for m in call] == [minted]


def test_an_id_in_flight_is_refused_and_a_non_streamed_call_is_cancelled_by_it(
        stub: Any, open_stream: Open) -> None:
    body = {"prompt": "Long answer", "request_id": "mine", "stream": False, **ENDLESS}
    first = open_stream(stub.Completion(completion_request(**body)))
    wait_load(stub, lambda ld: ld.n_processing == 1, "the first request runs")
    second = complete(stub, prompt="Same id", n_predict=2, request_id="mine")
    assert second.code == grpc.StatusCode.ALREADY_EXISTS and "mine" in second.details
    assert second.messages == []
    assert first.messages == []  # stream = false: nothing before the end

    assert stub.Cancel(server_pb2.CancelRequest(id="mine"), timeout=10).found
    assert first.end() == grpc.StatusCode.CANCELLED
    wait_free(stub)
    serve_next(stub)
    reused = complete(stub, prompt="Reused id", n_predict=2, request_id="mine")
    assert reused.code == grpc.StatusCode.OK  # free again once the first ended


@pytest.mark.parametrize("bad", ["", "has space", "x" * 129, "tab\there", "é"])
def test_a_malformed_id_is_invalid(stub: Any, bad: str) -> None:
    r = complete(stub, prompt="Hello", n_predict=2, request_id=bad)
    assert r.code == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in r.details
    assert r.messages == []
