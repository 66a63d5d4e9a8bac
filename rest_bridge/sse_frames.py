"""Server-Sent Events exactly as llama-server writes them: `data: <json>\\n\\n` per event,
`data: [DONE]\\n\\n` at the end of the OpenAI routes, `:\\n\\n` as keep-alive, and an error
after the stream started as a last `data: {"error": {...}}\\n\\n` event.

Pure (no web framework): the service's HTTP-body RPCs (service/rpc_http.py, served through
Envoy) write their streams with `sse_stream` too, so both front doors send the same bytes from
one loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Protocol

import grpc

from rest_bridge.errors import BridgeError
from rest_bridge.jsonio import Json, dumps

DONE = b"data: [DONE]\n\n"
KEEP_ALIVE = b":\n\n"


def frame(event: Json) -> bytes:
    return b"data: " + dumps(event) + b"\n\n"


def frames(events: list[Json]) -> bytes:
    return b"".join(b"data: " + dumps(e) + b"\n\n" for e in events)


class Renderer(Protocol):
    """How one endpoint family writes a call's messages as llama-server's JSON."""

    @property
    def done_marker(self) -> bool:
        """Whether the SSE stream ends with `data: [DONE]` (the OpenAI routes)."""

    def events(self, msg: Any) -> list[Json]:
        """The SSE events for one streamed message (possibly none)."""

    def result(self, msgs: Sequence[Any]) -> Json:
        """The non-streaming body, from every message of the call."""


async def sse_stream(first: Any, next_message: Callable[[], Awaitable[Any]],
                     renderer: Renderer, ping: float = 0.0,
                     finish: Callable[[], None] | None = None) -> AsyncIterator[bytes]:
    """A generation's SSE bytes from its first message on: each message's events, an error
    (the message's `error`, or the call failing) as the last event, `data: [DONE]` where
    llama-server sends it. `next_message()` gives the next message, None at the end;
    `finish()` runs however the stream ends (the client gone included).

    With `ping` > 0, `:` keep-alives are yielded after that many seconds of silence (the
    service's HTTP-body streams; the bridge's SSEResponse sends its own at the ASGI level)."""
    pending: asyncio.Future[Any] | None = None
    try:
        msg = first
        while msg is not None:
            if msg.HasField("error"):
                yield frame(BridgeError.from_info(msg.error).body())
                return
            events = renderer.events(msg)
            if events:
                yield frames(events)
            try:
                if ping > 0:
                    # A task of its own, so that waiting on it can time out for a keep-alive
                    # without cancelling the call's read.
                    pending = asyncio.ensure_future(next_message())
                    while not (await asyncio.wait({pending}, timeout=ping))[0]:
                        yield KEEP_ALIVE
                    msg, pending = pending.result(), None
                else:
                    msg = await next_message()
            except (BridgeError, grpc.aio.AioRpcError) as e:
                err = e if isinstance(e, BridgeError) else BridgeError.from_rpc(e)
                yield frame(err.body())
                return
        if renderer.done_marker:
            yield DONE
    finally:
        if pending is not None:  # the client went away while the next message was awaited
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        if finish is not None:
            finish()
