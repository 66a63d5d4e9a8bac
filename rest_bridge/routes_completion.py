"""llama-server's native completion routes: POST /completion (and its alias /completions) and
POST /infill, answered in the native shape (see render_native)."""

from __future__ import annotations

from fastapi import Request
from llama.v1 import completion_pb2
from starlette.responses import Response

from rest_bridge.deps import PlainPosts, body_object
from rest_bridge.errors import BridgeError
from rest_bridge.generation import generate
from rest_bridge.jsonio import Json
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


def check_input_extra(body: dict[str, Json]) -> None:
    """llama-server's own checks of `input_extra`, with its messages: a missing `text` is an
    error there, where the typed message could only take it as empty."""
    extra = body.get("input_extra", [])
    if not isinstance(extra, list):
        raise BridgeError.invalid_request(
            '"input_extra" must be an array of {"filename": string, "text": string}')
    for chunk in extra:
        if not isinstance(chunk, dict) or not isinstance(chunk.get("text"), str):
            raise BridgeError.invalid_request(
                'extra_context chunk must contain a "text" field with a string value')
        if "filename" in chunk and not isinstance(chunk["filename"], str):
            raise BridgeError.invalid_request(
                'extra_context chunk\'s "filename" field must be a string')
