"""Embedding and rerank routes: POST /embedding and /embeddings (native: a bare array),
POST /v1/embeddings (OpenAI), POST /reranking, /rerank, /v1/rerank, /v1/reranking (Jina shape,
or TEI's bare array when the request names its documents `texts`).

Keys in llama-server's order (its JSON objects keep insertion order). Plain routes with the
direct way in (deps.PlainPosts, rest_bridge.direct): an embedding request is short, and
FastAPI's per-request work would be a visible part of it.
"""

from __future__ import annotations

import base64
from typing import Any

from fastapi import Request
from llama.v1 import embedding_pb2
from starlette.responses import Response

from rest_bridge.deps import PlainPosts, body_object, metadata
from rest_bridge.generation import json_response
from rest_bridge.jsonio import Json, to_message
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
    if "input" not in body and "content" in body:
        # llama-server: "content" is not OpenAI's, and answers in the native shape.
        return json_response(native_json(await _call(request, "Embed", req)))
    resp = await _call(request, "OpenAIEmbed", req)
    data: list[Json] = []
    for e in resp.data:
        if e.HasField("embedding_base64"):
            data.append({"embedding": base64.b64encode(e.embedding_base64).decode("ascii"),
                         "index": e.index, "object": "embedding",
                         "encoding_format": "base64"})
        else:
            data.append({"embedding": list(e.embedding), "index": e.index,
                         "object": "embedding"})
    return json_response({"model": resp.model, "object": "list",
                          "usage": {"prompt_tokens": resp.usage.prompt_tokens,
                                    "total_tokens": resp.usage.total_tokens},
                          "data": data})


@routes.post("/reranking", "/rerank", "/v1/rerank", "/v1/reranking")
async def rerank(request: Request) -> Response:
    body = await body_object(request)
    req = to_message(body, embedding_pb2.RerankRequest())
    resp = await _call(request, "Rerank", req)
    if "texts" in body:  # TEI style, as llama-server decides it
        tei: list[Json] = []
        for r in resp.results:
            item: dict[str, Json] = {"index": r.index, "score": r.relevance_score}
            if r.HasField("text"):
                item["text"] = r.text
            tei.append(item)
        return json_response(tei)
    return json_response({
        "model": resp.model, "object": "list",
        "usage": {"prompt_tokens": resp.usage.prompt_tokens,
                  "total_tokens": resp.usage.total_tokens},
        "results": [{"index": r.index, "relevance_score": r.relevance_score}
                    for r in resp.results]})


def native_json(resp: Any) -> list[Json]:
    return [{"index": r.index, "embedding": [list(v.values) for v in r.embedding]}
            for r in resp.results]


async def _call(request: Request, rpc: str, req: Any) -> Any:
    stub = app_upstream(request).llama
    return await getattr(stub, rpc)(req, metadata=metadata(request))
