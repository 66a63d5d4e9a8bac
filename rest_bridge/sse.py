"""Server-Sent Events exactly as llama-server frames them: `data: <json>\\n\\n` per event,
`data: [DONE]\\n\\n` at the end of the OpenAI routes, `:\\n\\n` as keep-alive, and an error
after the stream started as `data: {"error": {...}}\\n\\n`.

SSEResponse watches for the client going away while it streams, whatever the ASGI server's
spec version, and then stops the event source at once (which cancels the gRPC call). It also
sends the keep-alive itself when the source stays silent, so the source is read directly,
with no queue or extra task per event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from rest_bridge.sse_frames import DONE, KEEP_ALIVE, frame, frames

__all__ = ["DONE", "KEEP_ALIVE", "SSEResponse", "frame", "frames", "wait_disconnect"]

_log = logging.getLogger(__name__)
# How long a stream whose client left may take to end by itself once its call is cancelled
# (a cancelled call's pending read completes at once); then its task is cancelled.
_GRACE_S = 1.0


async def wait_disconnect(receive: Receive) -> None:
    """Return once the client has closed the connection."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class SSEResponse(StreamingResponse):
    """A text/event-stream response fed by an async iterator of framed bytes."""

    def __init__(self, content: AsyncIterator[bytes], ping_interval: float = 0.0,
                 on_disconnect: Callable[[], None] | None = None) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache"})
        self._events = content
        # Ends the source when the client goes (cancels the gRPC call), so the stream task
        # finishes by itself: cancelling a task that awaits a grpc.aio read leaks the read's
        # native batch (grpc/grpc#43360, ~0.2 KiB a dropped stream in grpcio 1.85).
        self._on_disconnect = on_disconnect
        self._ping_interval = ping_interval
        self._open = False  # between the start of streaming and the last body message
        self._last_send = 0.0
        self._send_lock = asyncio.Lock()  # keep-alives never land inside or after the end

    async def _send_body(self, send: Send, chunk: bytes, more: bool) -> None:
        async with self._send_lock:
            if self._open:
                await send({"type": "http.response.body", "body": chunk, "more_body": more})
                self._last_send = asyncio.get_running_loop().time()
                self._open = more

    async def stream_response(self, send: Send) -> None:
        # The headers go out now, when the service has accepted the request, not with the first
        # token: the client sets up its response (httpx: ~0.7 ms, by an A/B) while the prompt is
        # processed, instead of after the first token arrived (docs/rest.md).
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self.raw_headers})
        self._open = True
        self._last_send = asyncio.get_running_loop().time()
        async for chunk in self._events:
            await self._send_body(send, chunk, True)
        await self._send_body(send, b"", False)

    async def _keep_alive(self, send: Send) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(self._last_send + self._ping_interval - loop.time(), 0.05))
            if self._open and loop.time() - self._last_send >= self._ping_interval:
                await self._send_body(send, KEEP_ALIVE, True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = asyncio.ensure_future(self.stream_response(send))
        watch = asyncio.ensure_future(wait_disconnect(receive))
        tasks = [stream, watch]
        if self._ping_interval > 0:
            tasks.append(asyncio.ensure_future(self._keep_alive(send)))
        try:
            await asyncio.wait({stream, watch}, return_when=asyncio.FIRST_COMPLETED)
            if not stream.done() and self._on_disconnect is not None:
                self._on_disconnect()
                await asyncio.wait({stream}, timeout=_GRACE_S)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # If the stream was cancelled while sending, the generator sits at a yield: close
            # it now rather than at garbage collection, so its cleanup cancels the call now.
            closer: Any = getattr(self._events, "aclose", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()
        if stream.done() and not stream.cancelled() and stream.exception() is not None:
            _log.error("SSE stream failed", exc_info=stream.exception())
