"""Server-Sent Events exactly as llama-server frames them: `data: <json>\\n\\n` per event,
`data: [DONE]\\n\\n` at the end of the OpenAI routes, `:\\n\\n` as keep-alive, and an error
after the stream started as `data: {"error": {...}}\\n\\n`.

SSEResponse watches for the client going away while it streams, whatever the ASGI server's
spec version, and then stops the event source at once (which cancels the gRPC call).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from rest_bridge.jsonio import Json, dumps

_log = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"
KEEP_ALIVE = b":\n\n"


def frame(event: Json) -> bytes:
    return b"data: " + dumps(event) + b"\n\n"


def frames(events: list[Json]) -> bytes:
    return b"".join(b"data: " + dumps(e) + b"\n\n" for e in events)


async def wait_disconnect(receive: Receive) -> None:
    """Return once the client has closed the connection."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class SSEResponse(StreamingResponse):
    """A text/event-stream response fed by an async iterator of framed bytes."""

    def __init__(self, content: AsyncIterator[bytes]) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = asyncio.ensure_future(self.stream_response(send))
        watch = asyncio.ensure_future(wait_disconnect(receive))
        try:
            await asyncio.wait({stream, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (stream, watch):
                task.cancel()
            await asyncio.gather(stream, watch, return_exceptions=True)
            # If the stream was cancelled while sending, the generator sits at a yield: close
            # it now rather than at garbage collection, so its cleanup cancels the call now.
            closer: Any = getattr(self.body_iterator, "aclose", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()
        if stream.done() and not stream.cancelled() and stream.exception() is not None:
            _log.error("SSE stream failed", exc_info=stream.exception())
