"""The OpenAI-compatible generation routes: POST /v1/completions (`text_completion`) and
POST /v1/chat/completions (also /chat/completions), answered as llama-server does."""

from __future__ import annotations

from fastapi import Request
from llama.v1 import chat_pb2, completion_pb2
from starlette.responses import Response

from rest_bridge.deps import PlainPosts
from rest_bridge.errors import BridgeError
from rest_bridge.generation import generate
from rest_bridge.jsonio import NOT_AN_OBJECT
from rest_bridge.render_openai import ChatRenderer, TextCompletionRenderer

routes = PlainPosts()
router = routes.router


@routes.post("/v1/completions")
async def completions(request: Request) -> Response:
    return await generate(request, completion_pb2.CompletionRequest(), "OpenAICompletion",
                          TextCompletionRenderer)


@routes.post("/v1/chat/completions", "/chat/completions")
async def chat_completions(request: Request) -> Response:
    try:
        return await generate(request, chat_pb2.ChatCompletionRequest(), "ChatCompletion",
                              ChatRenderer)
    except BridgeError as e:
        if e.message != NOT_AN_OBJECT:
            raise
        # llama-server's words for a body that is not an object ([], "x", null)
        raise BridgeError.invalid_request(f"'messages' is required ({NOT_AN_OBJECT})") from e
