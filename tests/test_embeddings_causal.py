"""Embeddings of a causal (generation) model, tiny-bpe, with `--pooling last`, `mean` and `none`:
vectors equal llama.cpp's for the input alone; with `last` an input longer than the physical
batch is split across decodes (the result is read at its last token), with `mean` it is refused
naming --ubatch-size; `none` gives every token's unnormalized vector and is refused on the
OpenAI path, as llama-server does."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from embeddings_harness import (
    EmbedServer,
    cosine,
    embed_server,
    l2,
    max_abs_diff,
    normalized,
    reference_outputs,
)

import native

pytestmark = pytest.mark.slow
UBATCH = "64"


def tokens_of(path: Path, text: str) -> list[int]:
    model = native.Model(path)
    try:
        return model.vocab.tokenize(text, add_special=True)
    finally:
        model.close()


@pytest.fixture(scope="module")
def last(tiny_bpe_path: Path) -> Iterator[EmbedServer]:
    with embed_server(tiny_bpe_path, "--embedding", "--pooling", "last", "-ub", UBATCH,
                      "-b", UBATCH) as srv:
        yield srv


@pytest.fixture(scope="module")
def mean(tiny_bpe_path: Path) -> Iterator[EmbedServer]:
    with embed_server(tiny_bpe_path, "--embedding", "--pooling", "mean", "-ub", UBATCH,
                      "-b", UBATCH) as srv:
        yield srv


@pytest.fixture(scope="module")
def none(tiny_bpe_path: Path) -> Iterator[EmbedServer]:
    with embed_server(tiny_bpe_path, "--embedding", "--pooling", "none") as srv:
        yield srv


def test_last_pooling_equals_llama_cpp_and_splits_a_long_input(last: EmbedServer,
                                                               tiny_bpe_path: Path) -> None:
    short = tokens_of(tiny_bpe_path, "The quick brown fox jumps over the lazy dog.")
    long = tokens_of(tiny_bpe_path, " ".join(f"word{i}" for i in range(100)))
    assert len(long) > int(UBATCH) * 2
    for tokens in (short, long):
        # Alone, the long input is cut where llama.cpp cuts it into ubatches.
        [want] = reference_outputs(tiny_bpe_path, tokens, "last", n_ubatch=int(UBATCH))
        got = last.post("/v1/embeddings", {"input": tokens}).json()["data"][0]["embedding"]
        assert max_abs_diff(got, normalized(want)) < 1e-4
    # Together they share decodes: the long one is cut elsewhere, which moves flash
    # attention's rounding a little (up to ~1e-3 on this random model), nothing more.
    body = last.post("/v1/embeddings", {"input": [short, long]}).json()
    for tokens, item in zip((short, long), body["data"], strict=True):
        [want] = reference_outputs(tiny_bpe_path, tokens, "last")
        assert cosine(item["embedding"], want) > 0.9999
    assert body["usage"]["prompt_tokens"] == len(short) + len(long)


def test_concurrent_long_and_short_inputs(last: EmbedServer) -> None:
    texts = [("long " * 90) if i % 4 == 0 else f"short text {i}" for i in range(16)]
    alone = [last.post("/v1/embeddings", {"input": t}).json()["data"][0]["embedding"]
             for t in texts]
    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(lambda t: last.post("/v1/embeddings", {"input": t}).json(), texts))
    for t, g, a in zip(texts, got, alone, strict=True):
        # A long input shares its decodes with others here: where it is cut moves flash
        # attention's rounding (see above); a short one fits one decode either way.
        if t.startswith("long"):
            assert cosine(g["data"][0]["embedding"], a) > 0.9999
        else:
            assert max_abs_diff(g["data"][0]["embedding"], a) < 1e-4


def test_mean_pooling_equals_llama_cpp(mean: EmbedServer, tiny_bpe_path: Path) -> None:
    tokens = tokens_of(tiny_bpe_path, "Mean pooling averages every position.")
    [want] = reference_outputs(tiny_bpe_path, tokens, "mean")
    got = mean.post("/embedding", {"content": "Mean pooling averages every position."}).json()
    assert max_abs_diff(got[0]["embedding"][0], normalized(want)) < 1e-4


def test_mean_pooling_refuses_an_input_beyond_the_physical_batch(mean: EmbedServer) -> None:
    r = mean.post("/v1/embeddings", {"input": "word " * 100})
    assert r.status_code == 400
    message = r.json()["error"]["message"]
    assert "--ubatch-size" in message and f"of {UBATCH} tokens" in message
    assert mean.post("/v1/embeddings", {"input": "short"}).status_code == 200


def test_pooling_none_gives_every_token_unnormalized(none: EmbedServer,
                                                     tiny_bpe_path: Path) -> None:
    text = "Every token gets its own vector."
    tokens = tokens_of(tiny_bpe_path, text)
    want = reference_outputs(tiny_bpe_path, tokens, "none")
    got = none.post("/embeddings", {"content": [text, "two"]}).json()
    assert [g["index"] for g in got] == [0, 1]
    vectors = got[0]["embedding"]
    assert len(vectors) == len(tokens)
    for g, w in zip(vectors, want, strict=True):
        assert max_abs_diff(g, w) < 1e-4
    assert any(abs(l2(v) - 1.0) > 1e-3 for v in vectors)  # not normalized


def test_pooling_none_is_not_openai_compatible(none: EmbedServer) -> None:
    r = none.post("/v1/embeddings", {"input": "x"})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == ("Pooling type 'none' is not OAI compatible. Please "
                                            "use a different pooling type")
