"""Embedding and rerank routes: POST /embedding and /embeddings (native: a bare array),
POST /v1/embeddings (OpenAI), POST /reranking, /rerank, /v1/rerank, /v1/reranking (Jina shape,
or TEI's bare array when the request names its documents `texts`)."""

from __future__ import annotations

import base64

from fastapi import APIRouter, Request
from llama.v1 import embedding_pb2
from starlette.responses import Response

from rest_bridge.deps import Up, body_object, metadata
from rest_bridge.generation import json_response
from rest_bridge.jsonio import Json, to_message

router = APIRouter()


@router.post("/embedding")
@router.post("/embeddings")
async def embed(request: Request, up: Up) -> Response:
    req = to_message(await body_object(request), embedding_pb2.EmbedRequest())
    resp = await up.llama.Embed(req, metadata=metadata(request))
    return json_response([{"index": r.index,
                           "embedding": [list(v.values) for v in r.embedding]}
                          for r in resp.results])


@router.post("/v1/embeddings")
async def openai_embed(request: Request, up: Up) -> Response:
    req = to_message(await body_object(request), embedding_pb2.EmbedRequest())
    resp = await up.llama.OpenAIEmbed(req, metadata=metadata(request))
    data: list[Json] = []
    for e in resp.data:
        vector: Json = (base64.b64encode(e.embedding_base64).decode("ascii")
                        if e.HasField("embedding_base64") else list(e.embedding))
        data.append({"object": e.object or "embedding", "index": e.index, "embedding": vector})
    return json_response({"object": resp.object or "list", "data": data, "model": resp.model,
                          "usage": {"prompt_tokens": resp.usage.prompt_tokens,
                                    "total_tokens": resp.usage.total_tokens}})


@router.post("/reranking")
@router.post("/rerank")
@router.post("/v1/rerank")
@router.post("/v1/reranking")
async def rerank(request: Request, up: Up) -> Response:
    req = to_message(await body_object(request), embedding_pb2.RerankRequest())
    resp = await up.llama.Rerank(req, metadata=metadata(request))
    if req.texts and not req.documents:  # TEI style
        tei: list[Json] = []
        for r in resp.results:
            item: dict[str, Json] = {"index": r.index, "score": r.relevance_score}
            if r.HasField("text"):
                item["text"] = r.text
            tei.append(item)
        return json_response(tei)
    return json_response({
        "model": resp.model, "object": resp.object or "list",
        "usage": {"prompt_tokens": resp.usage.prompt_tokens,
                  "total_tokens": resp.usage.total_tokens},
        "results": [{"index": r.index, "relevance_score": r.relevance_score}
                    for r in resp.results]})
