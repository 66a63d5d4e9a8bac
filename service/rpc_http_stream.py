"""A generation's SSE stream as llama.v1.LlamaServerHttp writes it for Envoy: the bytes of
rest_bridge.sse_frames (the bridge's framing and renderers), with the fewest steps a message on
the service's event loop, whose GIL the engine thread needs between decodes (issue 24).

The handler reads the typed RPC's async generator in its own task and writes each message's
events with `context.write` at once: no read-ahead task and queue, no layers of async
generators between the typed RPC and grpc's write (rest_bridge.sse_frames.sse_stream's, the
handler's own, service/drain.py's), each of which costs the loop microseconds a token. The `:`
keep-alive comes from one timer, which only when the stream has been silent for the interval
starts a write of its own; a message's write waits for that one to end (grpc takes one write
at a time).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.api.httpbody_pb2 import HttpBody

from rest_bridge.errors import BridgeError
from rest_bridge.sse_frames import DONE, KEEP_ALIVE, Renderer, failure_bytes, message_bytes
from service.rpc_base import Context


class SseWriter:
    """Writes a stream's bytes as HttpBody messages; with `ping` > 0, a keep-alive after that
    many seconds without a write. `close()` stops the timer (and waits for its write)."""

    def __init__(self, context: Context, ping: float) -> None:
        self._context = context
        self._loop = asyncio.get_running_loop()
        self._ping = ping
        self._last = self._loop.time()
        self._writing = False  # a message's write is in flight
        self._keep_alive: asyncio.Future[None] | None = None
        self._timer = self._loop.call_later(ping, self._check_silence) if ping > 0 else None

    async def write(self, data: bytes) -> None:
        if self._keep_alive is not None:
            await self._keep_alive
        self._writing = True
        try:
            await self._context.write(HttpBody(data=data))
        finally:
            self._writing = False
            self._last = self._loop.time()

    def _check_silence(self) -> None:
        now = self._loop.time()
        if now - self._last >= self._ping and not self._writing and self._keep_alive is None:
            self._keep_alive = asyncio.ensure_future(self._send_keep_alive())
            self._last = now
        self._timer = self._loop.call_later(max(self._last + self._ping - now, 0.05),
                                            self._check_silence)

    async def _send_keep_alive(self) -> None:
        try:
            await self._context.write(HttpBody(data=KEEP_ALIVE))
        finally:
            self._last = self._loop.time()
            self._keep_alive = None

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        pending = self._keep_alive
        if pending is not None:
            with contextlib.suppress(BaseException):
                await pending


async def write_sse(call: AsyncIterator[Any], first: Any, renderer: Renderer,
                    writer: SseWriter) -> None:
    """rest_bridge.sse_frames.sse_stream's bytes, written as they come: each message's
    events, an error (the message's `error`, or the call failing) as the last event, `data:
    [DONE]` where llama-server sends it."""
    msg = first
    while msg is not None:
        data, last = message_bytes(msg, renderer)
        if data:
            await writer.write(data)
        if last:
            return
        try:
            msg = await anext(call, None)
        except (BridgeError, grpc.aio.AioRpcError) as e:
            await writer.write(failure_bytes(e))
            return
    if renderer.done_marker:
        await writer.write(DONE)
