"""Reranking on a generated BERT reranker (MiniLM's encoder and WordPiece vocabulary, a random
classifier head, rank pooling; native.testmodels "minilm-reranker") with `--reranking`: scores
equal llama.cpp's on the same `[CLS] query [SEP] document` input, results best first, top_n,
the Jina and TEI shapes over the bridge, every alias path, and the refusals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from embeddings_harness import EmbedServer, embed_server, reference_outputs
from llama.v1 import embedding_pb2

import native
from native.testmodels import ensure_model

pytestmark = pytest.mark.slow
QUERY = "what is a panda?"
DOCS = ["hi", "The giant panda is a bear native to China.", "Paris is in France.",
        "Pandas eat bamboo.", ""]


@pytest.fixture(scope="module")
def reranker_path() -> Path:
    return ensure_model("minilm-reranker")


@pytest.fixture(scope="module")
def server(reranker_path: Path) -> Iterator[EmbedServer]:
    with embed_server(reranker_path, "--reranking") as srv:
        yield srv


@pytest.fixture(scope="module")
def expected(reranker_path: Path) -> list[float]:
    """llama.cpp's score of each document alone: the first class output of `[CLS] query [SEP]
    document` (this vocabulary adds BOS and SEP, not EOS)."""
    model = native.Model(reranker_path)
    v = model.vocab
    assert v.add_bos and v.add_sep and not v.add_eos
    query = v.tokenize(QUERY, add_special=False, parse_special=False)
    inputs = [[v.bos, *query, v.sep, *v.tokenize(d, add_special=False, parse_special=False)]
              for d in DOCS]
    model.close()
    return [reference_outputs(reranker_path, tokens, "rank")[0][0] for tokens in inputs]


def rerank(**fields: Any) -> Any:
    return embedding_pb2.RerankRequest(**fields)


def test_grpc_scores_equal_llama_cpp_best_first(server: EmbedServer,
                                                expected: list[float]) -> None:
    resp = server.stub.Rerank(rerank(query=QUERY, documents=DOCS, model="r"), timeout=60)
    assert resp.model == "r" and resp.object == "list"
    order = sorted(range(len(DOCS)), key=lambda i: -expected[i])
    assert [r.index for r in resp.results] == order
    for r in resp.results:
        assert r.relevance_score == pytest.approx(expected[r.index], abs=1e-4)
    assert len(set(expected)) == len(expected)  # distinct scores: the order is meaningful
    assert resp.usage.prompt_tokens == resp.usage.total_tokens > 0


@pytest.mark.parametrize("path", ["/reranking", "/rerank", "/v1/rerank", "/v1/reranking"])
def test_bridge_jina_shape_on_every_alias(server: EmbedServer, expected: list[float],
                                          path: str) -> None:
    r = server.post(path, {"query": QUERY, "documents": DOCS, "top_n": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert list(body) == ["model", "object", "usage", "results"]
    assert list(body["usage"]) == ["prompt_tokens", "total_tokens"]
    results = body["results"]
    assert len(results) == 3 and all(list(x) == ["index", "relevance_score"] for x in results)
    best = sorted(range(len(DOCS)), key=lambda i: -expected[i])[:3]
    assert [x["index"] for x in results] == best


def test_bridge_tei_shape_with_text(server: EmbedServer, expected: list[float]) -> None:
    r = server.post("/rerank", {"query": QUERY, "texts": DOCS, "return_text": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body, list) and len(body) == len(DOCS)
    for x in body:
        assert list(x) == ["index", "score", "text"] and x["text"] == DOCS[x["index"]]
        assert x["score"] == pytest.approx(expected[x["index"]], abs=1e-4)
    plain = server.post("/rerank", {"query": QUERY, "texts": DOCS}).json()
    assert all(list(x) == ["index", "score"] for x in plain)


def test_top_n_beyond_the_documents_returns_them_all(server: EmbedServer) -> None:
    # llama-server clamps top_n to the number of documents; so do we.
    body = server.post("/rerank", {"query": QUERY, "documents": DOCS, "top_n": 50}).json()
    assert sorted(x["index"] for x in body["results"]) == list(range(len(DOCS)))


def test_top_n_0_returns_no_results(server: EmbedServer) -> None:
    # as llama-server: the documents are scored (usage counts them), none returned
    body = server.post("/rerank", {"query": QUERY, "documents": DOCS, "top_n": 0}).json()
    assert body["results"] == [] and body["usage"]["prompt_tokens"] > 0


def test_64_documents(server: EmbedServer) -> None:
    docs = [f"document {i} mentions {'pandas' if i % 7 == 0 else 'the weather'}"
            for i in range(64)]
    body = server.post("/v1/rerank", {"query": QUERY, "documents": docs}).json()
    scores = [x["relevance_score"] for x in body["results"]]
    assert sorted(x["index"] for x in body["results"]) == list(range(64))
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize(("body", "message"), [
    ({"query": QUERY, "documents": []}, '"documents" must be a non-empty string array'),
    ({"documents": DOCS}, '"query" must be provided'),
    ({"query": QUERY, "documents": DOCS, "top_n": -3}, "top_n must be a positive"),
    ({"query": QUERY, "documents": ["d"] * 10_000}, "at most 2048"),
])
def test_bad_input_is_a_400_and_the_server_serves_on(server: EmbedServer, body: dict[str, Any],
                                                     message: str) -> None:
    r = server.post("/rerank", body)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]["message"]
    with pytest.raises(grpc.RpcError) as e:
        server.stub.Rerank(rerank(**body), timeout=60)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert server.post("/rerank", {"query": "q", "documents": ["d"]}).status_code == 200


def test_a_generation_model_without_reranking_answers_501(grpc_service: Any) -> None:
    with pytest.raises(grpc.RpcError) as e:
        grpc_service.stub().Rerank(rerank(query="q", documents=["d"]), timeout=30)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert e.value.details() == ("This server does not support reranking. Start it with "
                                 "`--reranking`")


def test_the_rerank_server_process_never_loads_numpy(server: EmbedServer) -> None:
    # As tests/test_embeddings.py: scores are read as float32 arrays, not numpy's
    resp = server.stub.Rerank(embedding_pb2.RerankRequest(query=QUERY, documents=DOCS[:3]),
                              timeout=60)
    assert len(resp.results) == 3
    assert server.post("/rerank", {"query": QUERY, "documents": DOCS[:2]}).status_code == 200
    maps = Path(f"/proc/{server.svc.proc.pid}/maps").read_text()
    assert "libllama" in maps and "numpy" not in maps
