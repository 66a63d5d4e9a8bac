"""Embedding and rerank routes: POST /embedding and /embeddings (native: a bare array),
POST /v1/embeddings (OpenAI), POST /reranking, /rerank, /v1/rerank, /v1/reranking (Jina shape,
or TEI's bare array when the request names its documents `texts`).

The JSON is rest_bridge.render_embedding's. Plain routes with the
direct way in (deps.PlainPosts, rest_bridge.direct): an embedding request is short, and
FastAPI's per-request work would be a visible part of it.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from llama.v1 import embedding_pb2
from starlette.responses import Response

from rest_bridge.deps import PlainPosts, body_object, metadata
from rest_bridge.generation import json_response
from rest_bridge.jsonio import to_message
from rest_bridge.render_embedding import (
    native_json,
    openai_embed_json,
    rerank_json,
    wants_native,
)
from rest_bridge.upstream import app_upstream

routes = PlainPosts()
router = routes.router


@routes.post("/embedding", "/embeddings")
async def embed(request: Request) -> Response:
    req = to_message(await body_object(request), embedding_pb2.EmbedRequest())
    return json_response(native_json(await _call(request, "Embed", req)))


@routes.post("/v1/embeddings")
async def openai_embed(request: Request) -> Response:
    body = await body_object(request)
    req = to_message(body, embedding_pb2.EmbedRequest())
    if wants_native(body):
        return json_response(native_json(await _call(request, "Embed", req)))
    return json_response(openai_embed_json(await _call(request, "OpenAIEmbed", req)))


@routes.post("/reranking", "/rerank", "/v1/rerank", "/v1/reranking")
async def rerank(request: Request) -> Response:
    body = await body_object(request)
    req = to_message(body, embedding_pb2.RerankRequest())
    return json_response(rerank_json(await _call(request, "Rerank", req), body))


async def _call(request: Request, rpc: str, req: Any) -> Any:
    stub = app_upstream(request).llama
    return await getattr(stub, rpc)(req, metadata=metadata(request))
