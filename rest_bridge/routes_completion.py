"""llama-server's native completion routes: POST /completion (and its alias /completions) and
POST /infill, answered in the native shape (see render_native)."""

from __future__ import annotations

from fastapi import Request
from llama.v1 import completion_pb2
from starlette.responses import Response

from rest_bridge.deps import PlainPosts, body_object, metadata
from rest_bridge.generation import respond
from rest_bridge.jsonio import to_message
from rest_bridge.render_native import NativeRenderer
from rest_bridge.upstream import app_upstream

routes = PlainPosts()
router = routes.router


@routes.post("/completion", "/completions")
async def completion(request: Request) -> Response:
    up = app_upstream(request)
    req = to_message(await body_object(request), completion_pb2.CompletionRequest())
    call = up.llama.Completion(req, metadata=metadata(request))
    return await respond(request, up, call, NativeRenderer(req), req)


@routes.post("/infill")
async def infill(request: Request) -> Response:
    up = app_upstream(request)
    req = to_message(await body_object(request), completion_pb2.CompletionRequest())
    call = up.llama.Infill(req, metadata=metadata(request))
    return await respond(request, up, call, NativeRenderer(req), req)
