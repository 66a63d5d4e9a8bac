"""Units of service/rpc_http_stream.py (the SSE stream LlamaServerHttp writes for Envoy) and of
the native renderer's direct bytes: keep-alives after silence and never beside a message's
write, the events in order, an error (in band or the call failing) as the last event, a
stream cancelled while it waits closes the typed call. A stand-in async generator plays the
typed RPC's messages and a recorder plays grpc's context (pure logic: the end-to-end bytes are
tests/test_two_front_doors.py's); the rendering is the bridge's own."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from llama.v1 import common_pb2, completion_pb2
from sse_call_fakes import chunk, messages

from rest_bridge.errors import BridgeError
from rest_bridge.jsonio import dumps
from rest_bridge.render_native import NativeRenderer, partial_json
from rest_bridge.render_openai import TextCompletionRenderer
from rest_bridge.sse_frames import frames
from service.rpc_http_base import close_quietly
from service.rpc_http_stream import SseWriter, write_sse

KEEP_ALIVE = b":\n\n"


class Recorder:
    """grpc's servicer context as the writer uses it: each write's bytes, and how many writes
    were in flight at once (grpc takes one at a time)."""

    def __init__(self, write_s: float = 0.0) -> None:
        self.data: list[bytes] = []
        self._write_s = write_s
        self._in_flight = 0
        self.most_in_flight = 0

    async def write(self, message: Any) -> None:
        self._in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self._in_flight)
        try:
            if self._write_s:
                await asyncio.sleep(self._write_s)
            self.data.append(bytes(message.data))
        finally:
            self._in_flight -= 1





async def _write(call: AsyncIterator[Any], ping: float, renderer: Any = None,
                 write_s: float = 0.0) -> Recorder:
    recorder = Recorder(write_s)
    writer = SseWriter(recorder, ping)
    try:
        await write_sse(call, await anext(call), renderer or NativeRenderer(
            completion_pb2.CompletionRequest()), writer)
    finally:
        await writer.close()
    return recorder


def _events(data: list[bytes]) -> list[Any]:
    return [json.loads(d[len(b"data: "):]) for d in data if d.startswith(b"data: {")]


def test_silence_gets_keep_alives_and_the_events_stay_in_order() -> None:
    call = messages(chunk(""), chunk("a"), chunk("b", stop=True), pause=0.25)
    data = asyncio.run(_write(call, ping=0.05)).data
    assert KEEP_ALIVE in data  # keep-alives went out while the messages were late
    assert [e["content"] for e in _events(data)] == ["a", "b"]
    assert data[-1].startswith(b"data: {")  # nothing after the last event, no [DONE]


def test_no_keep_alives_when_disabled() -> None:
    call = messages(chunk(""), chunk("a", stop=True), pause=0.1)
    assert KEEP_ALIVE not in asyncio.run(_write(call, ping=0.0)).data


def test_a_keep_alive_never_goes_beside_a_message_write() -> None:
    # every write is slower than the keep-alive interval: no keep-alive may start during one
    call = messages(chunk(""), chunk("a"), chunk("b"), chunk("c", stop=True), pause=0.12)
    recorder = asyncio.run(_write(call, ping=0.05, write_s=0.15))
    assert recorder.most_in_flight == 1
    assert [e["content"] for e in _events(recorder.data)] == ["a", "b", "c"]


def test_the_openai_routes_end_with_done() -> None:
    m = completion_pb2.OpenAICompletionChunk(id="cmpl-1", object="text_completion")
    m.choices.add(index=0, text="hi")
    data = asyncio.run(_write(messages(m, m), ping=0.0,
                              renderer=TextCompletionRenderer())).data
    assert data[-1] == b"data: [DONE]\n\n"
    assert [e["choices"][0]["text"] for e in _events(data)] == ["hi", "hi"]


def test_an_in_band_error_is_the_last_event() -> None:
    error = common_pb2.ErrorInfo(code=500, message="boom", type="server_error")
    call = messages(chunk(""), chunk("a"),
                    completion_pb2.CompletionChunk(error=error), chunk("never"))
    data = asyncio.run(_write(call, ping=0.0)).data
    assert _events(data)[-1] == {"error": {"code": 500, "message": "boom",
                                           "type": "server_error"}}
    assert len(data) == 2


@pytest.mark.parametrize("ping", [0.0, 30.0])
def test_a_call_failing_mid_stream_is_the_last_event(ping: float) -> None:
    aborted = BridgeError(400, "bad field", "invalid_request_error")
    data = asyncio.run(_write(messages(chunk(""), chunk("a"), chunk("b"), aborted),
                              ping)).data
    events = _events(data)
    assert [e.get("content") for e in events[:-1]] == ["a", "b"]
    assert events[-1]["error"]["message"] == "bad field"


def test_a_stream_cancelled_while_waiting_closes_the_typed_call() -> None:
    # The client goes away (grpc cancels the handler's task) while the next message is
    # awaited: the typed call's generator ends then, which cancels the generation.
    closed = asyncio.Event()

    async def slow() -> AsyncIterator[Any]:
        try:
            yield chunk("")
            yield chunk("a")
            await asyncio.sleep(3600)
            yield chunk("never")
        finally:
            closed.set()

    async def run() -> list[bytes]:
        call = slow()
        recorder = Recorder()
        writer = SseWriter(recorder, 30.0)
        task = asyncio.ensure_future(write_sse(call, await anext(call), NativeRenderer(
            completion_pb2.CompletionRequest()), writer))
        await asyncio.sleep(0.05)  # the stream is now waiting for a message
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await writer.close()
        await close_quietly(call)
        await asyncio.wait_for(closed.wait(), 5)
        return recorder.data

    assert [e["content"] for e in _events(asyncio.run(run()))] == ["a"]


@settings(max_examples=300, deadline=None)
@given(text=st.text(), tokens=st.lists(st.integers(0, 2**31 - 1), max_size=4),
       index=st.integers(0, 7), slot=st.integers(-1, 63), predicted=st.integers(0, 10**6),
       evaluated=st.integers(0, 10**6))
def test_a_plain_native_event_is_the_general_paths_json(text: str, tokens: list[int],
                                                        index: int, slot: int,
                                                        predicted: int,
                                                        evaluated: int) -> None:
    # NativeRenderer writes a message with nothing but partial_json's fixed keys directly;
    # the bytes must be what the general path's dict dumps to.
    m = completion_pb2.CompletionChunk(index=index, content=text, tokens=tokens, id_slot=slot,
                                       tokens_predicted=predicted, tokens_evaluated=evaluated)
    events = NativeRenderer(completion_pb2.CompletionRequest()).events(m)
    if not (text or tokens):
        assert events == []  # the "accepted" message: no event
        return
    assert frames(events) == b"data: " + dumps(partial_json(m)) + b"\n\n"


def test_a_native_event_with_more_takes_the_general_path() -> None:
    m = chunk("a")
    m.timings.predicted_n = 1
    (event,) = NativeRenderer(completion_pb2.CompletionRequest()).events(m)
    assert event == partial_json(m) and "timings" in event
