"""Our embedding and rerank answers against llama-server's, on the same GGUF with the same
flags, when the pinned llama-server is built (`python -m bench --prepare-only`; the benchmark
checks the same on every run): the same JSON shapes (keys in the same order), vectors and scores
within 1e-4 for an input alone, the same errors.

Several inputs in one request are compared looser: which inputs share a ubatch depends on
timing in either server, and llama.cpp's results move with the ubatch (its F16 matrix products
take another path for larger batches; bench/embeddings.py, `parity`)."""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from embeddings_harness import cosine, embed_server, max_abs_diff

from bench.llama_build import cached_server_build
from bench.servers import ServerSettings, start_llama_server
from native.testmodels import ensure_model

pytestmark = pytest.mark.slow
BUILD = cached_server_build()
if BUILD is None:
    pytest.skip("llama-server is not built (python -m bench --prepare-only builds it)",
                allow_module_level=True)
TOL = 1e-4
Pair = tuple[str, str]  # (ours: the REST bridge, llama-server)


@contextmanager
def both(model: Path, flags: tuple[str, ...], log_dir: Path) -> Iterator[Pair]:
    """Ours and llama-server on the same model and flags: their URLs."""
    assert BUILD is not None
    settings = ServerSettings(model, ctx=2048, parallel=4, threads=1, batch=512, ubatch=512,
                              extra=flags)
    server, url = start_llama_server(BUILD.llama_server, settings, log_dir)
    try:
        with embed_server(model, *flags, "-t", "1", "-tb", "1") as ours:
            yield ours.url, url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def minilm(minilm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with both(minilm_path, ("--embedding",), tmp_path_factory.mktemp("ls")) as pair:
        yield pair


def post(pair: Pair, path: str, body: Any) -> tuple[httpx.Response, httpx.Response]:
    return (httpx.post(pair[0] + path, json=body, timeout=120),
            httpx.post(pair[1] + path, json=body, timeout=120))


def shape(x: Any) -> Any:
    """The JSON's structure: keys in order, element shapes, value types."""
    if isinstance(x, dict):
        return [(k, shape(v)) for k, v in x.items()]
    if isinstance(x, list):
        return ["list", shape(x[0]) if x else None]
    return "number" if isinstance(x, int | float) and not isinstance(x, bool) else type(x).__name__


def floats(x: Any) -> list[float]:
    """Every number in a JSON value, in order (base64 vectors decoded)."""
    if isinstance(x, dict):
        return [f for k, v in x.items() if k not in ("model",) for f in floats(v)]
    if isinstance(x, list):
        return [f for v in x for f in floats(v)]
    if isinstance(x, str) and len(x) > 100:  # a base64 vector
        raw = base64.b64decode(x)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return [float(x)] if isinstance(x, int | float) and not isinstance(x, bool) else []


def assert_same(pair: Pair, path: str, body: Any) -> None:
    a, b = post(pair, path, body)
    assert a.status_code == b.status_code == 200, (a.text, b.text)
    ours, theirs = a.json(), b.json()
    assert shape(ours) == shape(theirs), path
    want = floats(theirs)
    scale = max(1.0, *map(abs, want))  # embd_normalize 0 scales to the int16 range
    assert max_abs_diff(floats(ours), want) < TOL * scale, (path, body)


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/embeddings", {"input": "The giant panda lives in China."}),
    ("/v1/embeddings", {"input": ["One sentence."], "model": "named"}),
    ("/v1/embeddings", {"input": "base64 please", "encoding_format": "base64"}),
    ("/v1/embeddings", {"input": [101, 7592, 2088, 102]}),
    ("/v1/embeddings", {"content": "content on the OpenAI path"}),
    ("/embedding", {"content": "native shape"}),
    ("/embeddings", {"content": [[101, 7592, 102]]}),
    ("/embedding", {"content": [101, "mixed text", 102]}),
    ("/embedding", {"content": "no normalization", "embd_normalize": -1}),
    ("/embedding", {"content": "max absolute", "embd_normalize": 0}),
    ("/embedding", {"content": "taxicab", "embd_normalize": 1}),
    ("/embedding", {"content": ""}),
])
def test_one_input_answers_equal(minilm: Pair, path: str, body: Any) -> None:
    assert_same(minilm, path, body)


def test_many_inputs_same_shape_and_close(minilm: Pair) -> None:
    inputs = [f"sentence {i} of a batch about {'rivers' if i % 2 else 'trains'}"
              for i in range(24)]
    a, b = post(minilm, "/v1/embeddings", {"input": inputs})
    ours, theirs = a.json(), b.json()
    assert shape(ours) == shape(theirs) and ours["usage"] == theirs["usage"]
    for x, y in zip(ours["data"], theirs["data"], strict=True):
        assert x["index"] == y["index"] and cosine(x["embedding"], y["embedding"]) > 0.9999


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/embeddings", {"input": []}),
    ("/v1/embeddings", {"input": "x", "encoding_format": "hex"}),
    ("/v1/embeddings", {"model": "no input"}),
    ("/embedding", {"content": [[]]}),
    ("/rerank", {"query": "q", "documents": ["d"]}),
])
def test_errors_equal(minilm: Pair, path: str, body: Any) -> None:
    a, b = post(minilm, path, body)
    assert a.status_code == b.status_code, (a.text, b.text)
    assert a.json() == b.json()


def test_reranker_answers_equal(tmp_path: Path) -> None:
    docs = ["The giant panda is a bear.", "Paris is in France.", "Pandas eat bamboo.", "hi"]
    with both(ensure_model("minilm-reranker"), ("--reranking",), tmp_path) as pair:
        for doc in docs:
            assert_same(pair, "/rerank", {"query": "what is a panda?", "documents": [doc]})
        assert_same(pair, "/v1/rerank", {"query": "q", "texts": ["one text"],
                                         "return_text": True})
        a, b = post(pair, "/reranking", {"query": "what is a panda?", "documents": docs,
                                         "top_n": 3})
        ours, theirs = a.json(), b.json()
        assert shape(ours) == shape(theirs) and ours["usage"] == theirs["usage"]
        assert len(ours["results"]) == 3
        mine = {r["index"]: r["relevance_score"] for r in ours["results"]}
        for r in theirs["results"]:
            if r["index"] in mine:  # the top 3 agree unless two scores are within the noise
                assert mine[r["index"]] == pytest.approx(r["relevance_score"], abs=1e-2)
        for bad in ({"query": "q", "documents": []}, {"documents": ["d"]}):
            x, y = post(pair, "/rerank", bad)
            assert x.status_code == y.status_code == 400 and x.json() == y.json()


def test_pooling_none_answers_equal(tiny_bpe_path: Path, tmp_path: Path) -> None:
    with both(tiny_bpe_path, ("--embedding", "--pooling", "none"), tmp_path) as pair:
        assert_same(pair, "/embedding", {"content": "every token"})
        a, b = post(pair, "/v1/embeddings", {"input": "x"})
        assert a.status_code == b.status_code == 400 and a.json() == b.json()


def test_last_pooling_answers_equal(tiny_bpe_path: Path, tmp_path: Path) -> None:
    with both(tiny_bpe_path, ("--embedding", "--pooling", "last"), tmp_path) as pair:
        assert_same(pair, "/v1/embeddings", {"input": "The last token's state."})
        assert_same(pair, "/embedding", {"content": "word " * 300})  # split across decodes
