"""llama-server's native completion routes: POST /completion (and its alias /completions) and
POST /infill, answered in the native shape (see render_native)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from llama.v1 import completion_pb2
from starlette.responses import Response

from rest_bridge.deps import PlainPosts, body_object, metadata
from rest_bridge.generation import generate, respond
from rest_bridge.input_checks import check_input_extra
from rest_bridge.jsonio import Json, to_message
from rest_bridge.render_native import NativeRenderer
from rest_bridge.upstream import app_upstream

routes = PlainPosts()
router = routes.router


@routes.post("/completion", "/completions")
async def completion(request: Request) -> Response:
    return await generate(request, completion_pb2.CompletionRequest(), "Completion",
                          NativeRenderer)


@routes.post("/infill")
async def infill(request: Request) -> Response:
    body = await body_object(request)
    check_input_extra(body)
    up = app_upstream(request)
    req = infill_request(body)
    call = up.llama.Infill(req, metadata=metadata(request))
    return await respond(request, up, call, NativeRenderer(req), req)


def infill_request(body: dict[str, Json]) -> Any:
    """The Infill message of a body that passed check_input_extra. Its files go into the
    message directly when each is plain ({"text"} or {"text", "filename"}, encodable strings),
    as ParseDict would put them: ParseDict, pure Python, took ~0.3 ms for ~2,000 tokens of
    files, on the path to a warm request's first token. Anything else takes to_message's path
    whole, with its conversions and errors."""
    extra = body.get("input_extra")
    if not extra or "inputExtra" in body or not all(map(_plain_chunk, extra)):
        return to_message(body, completion_pb2.CompletionRequest())
    req = to_message({k: v for k, v in body.items() if k != "input_extra"},
                     completion_pb2.CompletionRequest())
    add = req.input_extra.add
    for chunk in extra:
        add(filename=chunk.get("filename", ""), text=chunk["text"])
    return req


def _plain_chunk(chunk: dict[str, str]) -> bool:
    n = len(chunk)
    return (n == 1 or (n == 2 and "filename" in chunk)) and all(map(_encodable, chunk.values()))


def _encodable(text: str) -> bool:
    """Whether protobuf takes `text` as it is (an unpaired surrogate is ParseDict's error)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True

