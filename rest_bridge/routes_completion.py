"""llama-server's native completion routes: POST /completion (and its alias /completions) and
POST /infill, answered in the native shape (see render_native)."""

from __future__ import annotations

from fastapi import Request
from llama.v1 import completion_pb2
from starlette.responses import Response

from rest_bridge.deps import PlainPosts, body_object
from rest_bridge.generation import generate
from rest_bridge.input_checks import check_input_extra
from rest_bridge.render_native import NativeRenderer

routes = PlainPosts()
router = routes.router


@routes.post("/completion", "/completions")
async def completion(request: Request) -> Response:
    return await generate(request, completion_pb2.CompletionRequest(), "Completion",
                          NativeRenderer)


@routes.post("/infill")
async def infill(request: Request) -> Response:
    check_input_extra(await body_object(request))  # the body is read once and kept
    return await generate(request, completion_pb2.CompletionRequest(), "Infill", NativeRenderer)

