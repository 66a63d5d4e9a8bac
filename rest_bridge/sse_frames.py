"""Server-Sent Events exactly as llama-server writes them: `data: <json>\\n\\n` per event,
`data: [DONE]\\n\\n` at the end of the OpenAI routes, `:\\n\\n` as keep-alive, and an error
after the stream started as a last `data: {"error": {...}}\\n\\n` event.

Pure (no web framework): the service's HTTP-body RPCs (service/rpc_http.py, served through
Envoy) write each message with `message_bytes` and `failure_bytes` too, the pieces of the
bridge's `sse_stream`, so both front doors send the same bytes (service/rpc_http_stream.py:
why the service does not iterate `sse_stream` itself)."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any, Protocol

import grpc

from rest_bridge.errors import BridgeError
from rest_bridge.jsonio import Json, dumps

DONE = b"data: [DONE]\n\n"
KEEP_ALIVE = b":\n\n"


def frame(event: Json) -> bytes:
    return b"data: " + dumps(event) + b"\n\n"


def frames(events: list[Json]) -> bytes:
    if len(events) == 1:  # most messages' (no generator to run)
        return b"data: " + dumps(events[0]) + b"\n\n"
    return b"".join(b"data: " + dumps(e) + b"\n\n" for e in events)


class Renderer(Protocol):
    """How one endpoint family writes a call's messages as llama-server's JSON."""

    @property
    def done_marker(self) -> bool:
        """Whether the SSE stream ends with `data: [DONE]` (the OpenAI routes)."""

    def events(self, msg: Any) -> list[Json]:
        """The SSE events for one streamed message (possibly none); an event may be bytes,
        its JSON text already (jsonio.dumps passes those as they are)."""

    def result(self, msgs: Sequence[Any]) -> Json:
        """The non-streaming body, from every message of the call."""


def message_bytes(msg: Any, renderer: Renderer) -> tuple[bytes, bool]:
    """One message's SSE bytes (b"" when it has no event), and whether the stream ends with
    it (its `error`, as the last event)."""
    if msg.HasField("error"):
        return frame(BridgeError.from_info(msg.error).body()), True
    events = renderer.events(msg)
    return (frames(events) if events else b""), False


def failure_bytes(e: BridgeError | grpc.aio.AioRpcError) -> bytes:
    """The last event of a stream whose call failed after it started."""
    return frame((e if isinstance(e, BridgeError) else BridgeError.from_rpc(e)).body())


async def sse_stream(first: Any, next_message: Callable[[], Awaitable[Any]],
                     renderer: Renderer,
                     finish: Callable[[], None] | None = None) -> AsyncGenerator[bytes, None]:
    """A generation's SSE bytes from its first message on: each message's events, an error
    (the message's `error`, or the call failing) as the last event, `data: [DONE]` where
    llama-server sends it. `next_message()` gives the next message, None at the end;
    `finish()` runs however the stream ends (the client gone included). The bridge's
    SSEResponse adds the keep-alives at the ASGI level."""
    try:
        msg = first
        while msg is not None:
            data, last = message_bytes(msg, renderer)
            if data:
                yield data
            if last:
                return
            try:
                msg = await next_message()
            except (BridgeError, grpc.aio.AioRpcError) as e:
                yield failure_bytes(e)
                return
        if renderer.done_marker:
            yield DONE
    finally:
        if finish is not None:
            finish()
