"""What route handlers share: the Upstream dependency, the request body as a JSON object, the
caller's credentials as gRPC metadata, and plain POST routes for the generation endpoints."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from rest_bridge.auth import grpc_metadata
from rest_bridge.jsonio import Json, parse_json, parse_object
from rest_bridge.upstream import Upstream, upstream

Up = Annotated[Upstream, Depends(upstream)]
Endpoint = Callable[[Request], Awaitable[Response]]


def plain_post(router: APIRouter, *paths: str) -> Callable[[Endpoint], Endpoint]:
    """Register `async def endpoint(request) -> Response` for POST on `paths` as a plain
    Starlette route. FastAPI's own routes analyse parameters and solve dependencies on every
    request, about 0.1 ms that the generation routes would pay before their gRPC call starts;
    they need neither. Routing, 405s, error handlers and middleware are the same."""
    def register(endpoint: Endpoint) -> Endpoint:
        for path in paths:
            router.add_route(path, endpoint, methods=["POST"])
        return endpoint
    return register


async def body_object(request: Request) -> dict[str, Json]:
    return parse_object(await request.body())


async def body_json(request: Request) -> Json:
    return parse_json(await request.body())


def metadata(request: Request) -> tuple[tuple[str, str], ...]:
    return grpc_metadata(request.headers)
