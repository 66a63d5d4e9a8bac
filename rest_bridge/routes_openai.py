"""The OpenAI-compatible generation routes: POST /v1/completions (`text_completion`) and
POST /v1/chat/completions (also /chat/completions), answered as llama-server does."""

from __future__ import annotations

from fastapi import Request
from llama.v1 import chat_pb2, completion_pb2
from starlette.responses import Response

from rest_bridge.deps import PlainPosts, body_object, metadata
from rest_bridge.generation import respond
from rest_bridge.jsonio import to_message
from rest_bridge.render_openai import ChatRenderer, TextCompletionRenderer
from rest_bridge.upstream import app_upstream

routes = PlainPosts()
router = routes.router


@routes.post("/v1/completions")
async def completions(request: Request) -> Response:
    up = app_upstream(request)
    req = to_message(await body_object(request), completion_pb2.CompletionRequest())
    call = up.llama.OpenAICompletion(req, metadata=metadata(request))
    return await respond(request, up, call, TextCompletionRenderer(), req)


@routes.post("/v1/chat/completions", "/chat/completions")
async def chat_completions(request: Request) -> Response:
    up = app_upstream(request)
    req = to_message(await body_object(request), chat_pb2.ChatCompletionRequest())
    call = up.llama.ChatCompletion(req, metadata=metadata(request))
    return await respond(request, up, call, ChatRenderer(req), req)
