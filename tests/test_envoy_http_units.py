"""Units of service/rpc_http.py's pure parts: the key as the bridge reads it, the bridge's SSE
loop's endings (rest_bridge.sse_frames.sse_stream; a stand-in async generator plays the typed
RPC's messages; the rendering is the bridge's own renderer), and the typed RPC's abort read as
the bridge reads a status off the wire. The service's own SSE writer (keep-alives included):
tests/test_envoy_stream.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest
from llama.v1 import common_pb2, completion_pb2
from sse_call_fakes import chunk, messages

from rest_bridge.errors import BridgeError
from rest_bridge.render_native import NativeRenderer
from rest_bridge.sse_frames import sse_stream
from service.rpc_http_base import InnerContext, presented_key


@pytest.mark.parametrize(("metadata", "key"), [
    ((("authorization", "Bearer k1"),), "k1"),
    ((("authorization", "bearer  k1 "),), "k1"),
    ((("authorization", "k1"),), "k1"),
    ((("x-api-key", "k1"),), "k1"),
    ((("authorization", "Bearer "),), None),
    ((), None),
    ((("other", "x"),), None),
])
def test_presented_key_reads_as_the_bridge(metadata: Any, key: str | None) -> None:
    assert presented_key(metadata) == key





async def _sse(call: Any) -> list[bytes]:
    first = await anext(call)
    renderer = NativeRenderer(completion_pb2.CompletionRequest())
    return [c async for c in sse_stream(first, lambda: anext(call, None), renderer)]


def test_the_events_stay_in_order_and_native_streams_have_no_done() -> None:
    call = messages(chunk(""), chunk("a"), chunk("b", stop=True), pause=0.01)
    chunks = asyncio.run(_sse(call))
    assert [json.loads(e[len(b"data: "):])["content"] for e in chunks] == ["a", "b"]
    assert b":\n\n" not in chunks  # the bridge's keep-alives are SSEResponse's
    assert not any(c == b"data: [DONE]\n\n" for c in chunks)  # native: no [DONE]


def test_an_in_band_error_is_the_last_event() -> None:
    error = common_pb2.ErrorInfo(code=500, message="boom", type="server_error")
    call = messages(chunk(""), chunk("a"),
                    completion_pb2.CompletionChunk(error=error), chunk("never"))
    chunks = asyncio.run(_sse(call))
    assert json.loads(chunks[-1][len(b"data: "):]) == {
        "error": {"code": 500, "message": "boom", "type": "server_error"}}
    assert len(chunks) == 2


def test_an_abort_mid_stream_is_the_last_event() -> None:
    async def run() -> list[bytes]:
        inner = InnerContext(outer=None)
        try:
            await inner.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad field")
        except grpc.aio.AioRpcError as e:
            aborted = e
        return await _sse(messages(chunk(""), chunk("a"), aborted))

    chunks = asyncio.run(run())
    last = json.loads(chunks[-1][len(b"data: "):])
    assert last["error"]["code"] == 400 and last["error"]["message"] == "bad field"


def test_initial_metadata_is_kept_for_the_headers() -> None:
    inner = InnerContext(outer=None)
    asyncio.run(inner.send_initial_metadata((("x-request-id", "cmpl-1"),)))
    assert inner.initial == {"x-request-id": "cmpl-1"}
    assert BridgeError(401, "Invalid API Key", "authentication_error").body()["error"][
        "type"] == "authentication_error"
