"""Embeddings and reranking through a real Envoy (grpc_json_transcoder) in front of the service:
the routes of llama.v1.LlamaServerHttp's Embed, OpenAIEmbed and Rerank reach the same answers
as the bridge, in llama-server's shapes (tests/test_two_front_doors.py compares the bytes)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from embeddings_harness import EmbedServer, cosine, embed_server, max_abs_diff
from envoy_harness import EnvoyProcess

from native.testmodels import ensure_model

pytestmark = pytest.mark.slow
REFERENCE = Path(__file__).parent / "data" / "minilm_reference.json"


@pytest.fixture(scope="module")
def minilm_envoy(minilm_path: Path, tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[tuple[EmbedServer, httpx.Client]]:
    with embed_server(minilm_path, "--embedding") as srv, \
            EnvoyProcess.start([srv.svc.address], tmp_path_factory.mktemp("envoy")) as envoy, \
            httpx.Client(base_url=envoy.base_url, timeout=60.0) as client:
        yield srv, client


def test_openai_embeddings_through_envoy_match_the_reference(
        minilm_envoy: tuple[EmbedServer, httpx.Client]) -> None:
    _, client = minilm_envoy
    sentences = json.loads(REFERENCE.read_text(encoding="utf-8"))["sentences"]
    r = client.post("/v1/embeddings", json={"input": [s["text"] for s in sentences]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "list" and len(body["data"]) == len(sentences)
    for s, d in zip(sentences, body["data"], strict=True):
        assert cosine(d["embedding"], s["embedding"]) >= 0.9999, s["text"]


def test_native_embeddings_through_envoy_equal_the_bridge(
        minilm_envoy: tuple[EmbedServer, httpx.Client]) -> None:
    srv, client = minilm_envoy
    for path in ("/embedding", "/embeddings"):
        r = client.post(path, json={"content": ["a red car", "the sea"]})
        assert r.status_code == 200, r.text
        results = r.json()
        bridged = srv.post(path, {"content": ["a red car", "the sea"]}).json()
        assert [x.get("index", 0) for x in results] == [0, 1]
        for got, want in zip(results, bridged, strict=True):
            assert max_abs_diff(got["embedding"][0], want["embedding"][0]) < 1e-6


def test_bad_input_through_envoy_is_a_400(minilm_envoy: tuple[EmbedServer, httpx.Client]) -> None:
    _, client = minilm_envoy
    r = client.post("/v1/embeddings", json={"input": []})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == '"input" must not be empty'


def test_rerank_through_envoy(tmp_path: Path) -> None:
    docs = ["pandas eat bamboo", "paris", "a bear from china"]
    with embed_server(ensure_model("minilm-reranker"), "--reranking") as srv, \
            EnvoyProcess.start([srv.svc.address], tmp_path) as envoy:
        want: Any = srv.post("/rerank", {"query": "panda", "documents": docs}).json()
        for path in ("/reranking", "/rerank", "/v1/rerank", "/v1/reranking"):
            r = httpx.post(envoy.base_url + path, json={"query": "panda", "documents": docs},
                           timeout=60.0)
            assert r.status_code == 200, r.text
            got = r.json()["results"]
            assert [x.get("index", 0) for x in got] == [x["index"] for x in want["results"]]
            assert [x["relevance_score"] for x in got] == pytest.approx(
                [x["relevance_score"] for x in want["results"]], abs=1e-6)
