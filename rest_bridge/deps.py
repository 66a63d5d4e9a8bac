"""What route handlers share: the Upstream dependency, the request body as a JSON object, the
caller's credentials as gRPC metadata, and the plain POST routes of the generation endpoints."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from rest_bridge.auth import grpc_metadata
from rest_bridge.errors import BridgeError
from rest_bridge.jsonio import Json, parse_json, parse_object
from rest_bridge.upstream import Upstream, upstream

Up = Annotated[Upstream, Depends(upstream)]
# As the service's --max-body-bytes default (service.limits): its gRPC message cap.
DEFAULT_MAX_BODY_BYTES = 64 << 20
Endpoint = Callable[[Request], Awaitable[Response]]


class PlainPosts:
    """`async def endpoint(request) -> Response` handlers for POST, registered as plain
    Starlette routes on `router` and listed in `endpoints` (path -> handler) for the app's
    direct path (rest_bridge.direct). FastAPI's own routes analyse parameters and solve
    dependencies on every request, about 0.1 ms that the generation routes would pay before
    their gRPC call starts; they need neither."""

    def __init__(self) -> None:
        self.router = APIRouter()
        self.endpoints: dict[str, Endpoint] = {}

    def post(self, *paths: str) -> Callable[[Endpoint], Endpoint]:
        def register(endpoint: Endpoint) -> Endpoint:
            for path in paths:
                self.router.add_route(path, endpoint, methods=["POST"])
                self.endpoints[path] = endpoint
            return endpoint
        return register


async def read_body(request: Request) -> bytes:
    """The request body, read at most once; larger than the bridge's --max-body-bytes: a 413,
    before the rest is read (a declared Content-Length before any of it)."""
    cached: bytes | None = getattr(request, "_body", None)
    if cached is not None:
        return cached
    settings = getattr(request.app.state, "settings", None)
    limit = getattr(settings, "max_body_bytes", DEFAULT_MAX_BODY_BYTES)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # where Starlette's Request.body() keeps it: later reads get it
    return body


def _too_large(size: int, limit: int) -> BridgeError:
    return BridgeError(413, f"the request body is {size} bytes or more; the limit is {limit} "
                       "(--max-body-bytes)")


async def body_object(request: Request) -> dict[str, Json]:
    return parse_object(await read_body(request))


async def body_json(request: Request) -> Json:
    return parse_json(await read_body(request))


def metadata(request: Request) -> tuple[tuple[str, str], ...]:
    return grpc_metadata(request.headers)
