"""Server-Sent Events exactly as llama-server writes them: `data: <json>\\n\\n` per event,
`data: [DONE]\\n\\n` at the end of the OpenAI routes, `:\\n\\n` as keep-alive, and an error
after the stream started as a last `data: {"error": {...}}\\n\\n` event.

Pure (no web framework): the service's HTTP-body RPCs (service/rpc_http.py, served through
Envoy) write their streams with `sse_stream` too, so both front doors send the same bytes from
one loop."""

from __future__ import annotations

import asyncio
import contextlib
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


async def sse_stream(first: Any, next_message: Callable[[], Awaitable[Any]],
                     renderer: Renderer, ping: float = 0.0,
                     finish: Callable[[], None] | None = None) -> AsyncGenerator[bytes, None]:
    """A generation's SSE bytes from its first message on: each message's events, an error
    (the message's `error`, or the call failing) as the last event, `data: [DONE]` where
    llama-server sends it. `next_message()` gives the next message, None at the end;
    `finish()` runs however the stream ends (the client gone included).

    With `ping` > 0, `:` keep-alives are yielded after that many seconds of silence (the
    service's HTTP-body streams; the bridge's SSEResponse sends its own at the ASGI level)."""
    ahead = _ReadAhead(next_message, ping) if ping > 0 else None
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
                if ahead is None:
                    msg = await next_message()
                else:
                    while (got := await ahead.next()) is _SILENT:
                        yield KEEP_ALIVE
                    msg = got
            except (BridgeError, grpc.aio.AioRpcError) as e:
                err = e if isinstance(e, BridgeError) else BridgeError.from_rpc(e)
                yield frame(err.body())
                return
        if renderer.done_marker:
            yield DONE
    finally:
        if ahead is not None:  # the client may have gone while the next message was awaited
            await ahead.stop()
        if finish is not None:
            finish()


_SILENT = object()  # from _ReadAhead: nothing came for a keep-alive interval


class _ReadAhead:
    """Reads a stream's messages in one task of its own, with one timer that queues _SILENT
    after `ping` seconds without a message, so that a keep-alive goes out without the read
    being cancelled. A task and an asyncio.wait for every message instead cost the service's
    event loop, whose GIL the engine thread needs between decodes, ~14 us of CPU a message
    more than no keep-alive at all (a micro-benchmark of sse_stream: 17.2 against 3.0 us);
    this costs ~3 us."""

    def __init__(self, next_message: Callable[[], Awaitable[Any]], ping: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[Any, BaseException | None]] = asyncio.Queue()
        self._ping = ping
        self._last = self._loop.time()
        self._task = asyncio.ensure_future(self._read(next_message))
        self._timer = self._loop.call_later(ping, self._check_silence)

    async def _read(self, next_message: Callable[[], Awaitable[Any]]) -> None:
        while True:
            try:
                msg = await next_message()
            except Exception as e:  # handed to the reader, in order
                self._queue.put_nowait((None, e))
                return
            self._last = self._loop.time()
            self._queue.put_nowait((msg, None))
            if msg is None:
                return

    def _check_silence(self) -> None:
        now = self._loop.time()
        if now - self._last >= self._ping:
            self._queue.put_nowait((_SILENT, None))
            self._last = now
        self._timer = self._loop.call_later(self._last + self._ping - now, self._check_silence)

    async def next(self) -> Any:
        """The next message (None at the end) or _SILENT; a read's error is raised here."""
        msg, error = await self._queue.get()
        if error is not None:
            raise error
        return msg

    async def stop(self) -> None:
        self._timer.cancel()
        if not self._task.done():
            self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
