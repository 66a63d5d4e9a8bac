"""llama-server's embedding and rerank JSON from EmbedResponse, OpenAIEmbedResponse and
RerankResponse messages, keys in its order (its JSON objects keep insertion order).

Pure (no web framework): the bridge's routes (routes_embedding) and the service's HTTP-body
RPCs (service/rpc_http.py, through Envoy) both answer with these."""

from __future__ import annotations

import base64
from typing import Any

from rest_bridge.jsonio import Json


def native_json(resp: Any) -> list[Json]:
    """POST /embedding and /embeddings: a bare array, one embedding per token or pooled."""
    return [{"index": r.index, "embedding": [list(v.values) for v in r.embedding]}
            for r in resp.results]


def openai_embed_json(resp: Any) -> Json:
    """POST /v1/embeddings (a base64 embedding where encoding_format asked for it)."""
    data: list[Json] = []
    for e in resp.data:
        if e.HasField("embedding_base64"):
            data.append({"embedding": base64.b64encode(e.embedding_base64).decode("ascii"),
                         "index": e.index, "object": "embedding",
                         "encoding_format": "base64"})
        else:
            data.append({"embedding": list(e.embedding), "index": e.index,
                         "object": "embedding"})
    return {"model": resp.model, "object": "list",
            "usage": {"prompt_tokens": resp.usage.prompt_tokens,
                      "total_tokens": resp.usage.total_tokens},
            "data": data}


def wants_native(body: dict[str, Json]) -> bool:
    """llama-server answers /v1/embeddings in the native shape for a body with `content` and
    no `input` (not OpenAI's field)."""
    return "input" not in body and "content" in body


def rerank_json(resp: Any, body: dict[str, Json]) -> Json:
    """The Jina shape, or TEI's bare array when the request names its documents `texts`
    (as llama-server decides it)."""
    if "texts" in body:
        tei: list[Json] = []
        for r in resp.results:
            item: dict[str, Json] = {"index": r.index, "score": r.relevance_score}
            if r.HasField("text"):
                item["text"] = r.text
            tei.append(item)
        return tei
    return {
        "model": resp.model, "object": "list",
        "usage": {"prompt_tokens": resp.usage.prompt_tokens,
                  "total_tokens": resp.usage.total_tokens},
        "results": [{"index": r.index, "relevance_score": r.relevance_score}
                    for r in resp.results]}
