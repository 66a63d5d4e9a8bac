"""What route handlers share: the Upstream dependency, the request body as a JSON object, and
the caller's credentials as gRPC metadata."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from rest_bridge.auth import grpc_metadata
from rest_bridge.jsonio import Json, parse_json, parse_object
from rest_bridge.upstream import Upstream, upstream

Up = Annotated[Upstream, Depends(upstream)]


async def body_object(request: Request) -> dict[str, Json]:
    return parse_object(await request.body())


async def body_json(request: Request) -> Json:
    return parse_json(await request.body())


def metadata(request: Request) -> tuple[tuple[str, str], ...]:
    return grpc_metadata(request.headers)
