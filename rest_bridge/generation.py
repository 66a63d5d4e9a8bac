"""Generation requests, whatever their shape: one server-streaming gRPC call, answered either as
SSE (stream = true) or as one JSON body aggregated from the call's messages.

As in llama-server, a failure before the first event is an HTTP error status; after it, an
`error` event ends the stream. A client that disconnects cancels the call, streaming or not.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Request
from google.protobuf.message import Message
from starlette.responses import Response

from rest_bridge.deps import body_object, metadata
from rest_bridge.errors import BridgeError, error_response
from rest_bridge.jsonio import Json, dumps, to_message
from rest_bridge.sse import SSEResponse, wait_disconnect
from rest_bridge.sse_frames import Renderer, sse_stream
from rest_bridge.upstream import Upstream, app_upstream, cancel_call, next_message

T = TypeVar("T")


class ClientGone(Exception):
    """The HTTP client disconnected before its answer was ready."""


async def unless_disconnected(request: Request, work: Awaitable[T], call: Any) -> T:
    """Await `work`, a read of gRPC `call`; if the client disconnects first, cancel the call
    (which ends `work`) and raise ClientGone.

    `work` runs in this task (no task of its own, no asyncio.wait: this is on the path to the
    first token). The call is cancelled, not this task: cancelling a task that awaits a
    grpc.aio read leaks the read's native batch (grpc/grpc#43360); a cancelled call's pending
    read ends at once, raising CancelledError, and frees it."""
    me = asyncio.current_task()
    assert me is not None
    waiting = True

    def client_gone(watch: asyncio.Future[None]) -> None:
        # Runs as a callback, later than the watcher ends: by then `work` may be done.
        if waiting and not watch.cancelled():
            cancel_call(call)

    watch = asyncio.ensure_future(wait_disconnect(request.receive))
    watch.add_done_callback(client_gone)
    try:
        return await work
    except asyncio.CancelledError:
        if watch.done() and not watch.cancelled() and me.cancelling() == 0:
            raise ClientGone from None  # the call we cancelled, not this task
        raise
    finally:
        waiting = False
        watch.cancel()


def json_response(body: Json, status: int = 200) -> Response:
    return Response(dumps(body), status_code=status,
                    media_type="application/json; charset=utf-8")


def ping_interval(req: Any, up: Upstream) -> float:
    """The request's `sse_ping_interval` if it has one, else the bridge's."""
    return float(req.sse_ping_interval) if req.HasField("sse_ping_interval") \
        else up.sse_ping_interval


async def generate(request: Request, message: Message, rpc: str,
                   renderer: Callable[[Any], Renderer]) -> Response:
    """A generation route's whole work: the JSON body into `message`, the llama.v1 call named
    `rpc` with it, and the answer drawn by `renderer(message)` (see respond)."""
    up = app_upstream(request)
    req = to_message(await body_object(request), message)
    call = getattr(up.llama, rpc)(req, metadata=metadata(request))
    return await respond(request, up, call, renderer(req), req)


async def respond(request: Request, up: Upstream, call: Any, renderer: Renderer,
                  req: Any) -> Response:
    """Answer generation request `req` from its gRPC call (which this takes ownership of):
    SSE when req.stream, else one JSON body."""
    stream = bool(req.stream)
    try:
        first = await unless_disconnected(request, next_message(call), call)
        if first is None:
            raise BridgeError(500, "the generation ended without a result")
        if first.HasField("error"):
            raise BridgeError.from_info(first.error)
        if not stream:
            msgs = await unless_disconnected(request, _collect(call, first), call)
            return _with_id(json_response(renderer.result(msgs)), first)
    except ClientGone:
        cancel_call(call)
        return Response(status_code=499)  # nobody will read it
    except BridgeError as e:
        cancel_call(call)
        return error_response(e)
    # The keep-alives are SSEResponse's (ASGI level); cancel_call is a no-op once it ended.
    events = sse_stream(first, lambda: next_message(call), renderer,
                        finish=lambda: cancel_call(call))
    return _with_id(SSEResponse(events, ping_interval(req, up),
                                 on_disconnect=lambda: cancel_call(call)), first)


def _with_id(response: Response, first: Any) -> Response:
    """The generation's id as the X-Request-Id header (for POST /cancel): the native shape
    has no key for it, and the header comes before a stream's first event."""
    if first.id:
        response.headers["x-request-id"] = first.id
    return response


async def _collect(call: Any, first: Any) -> list[Any]:
    msgs = [first]
    while (msg := await next_message(call)) is not None:
        if msg.HasField("error"):
            raise BridgeError.from_info(msg.error)
        msgs.append(msg)
    return msgs
