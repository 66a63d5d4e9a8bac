"""Our C ranking helpers (native/_cffi_src/ranking.c): the most likely tokens of a logits row
with its log-sum-exp (n_probs), and the candidates a sampler chain left ranked by probability
(post_sampling_probs), checked against plain Python on the same float32 values."""

from __future__ import annotations

import math
from array import array
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import native
from native.sampler import top_logits


def _row(values: list[float]) -> memoryview[float]:
    return memoryview(array("f", values))


def _best_first(values: memoryview[float], k: int) -> list[int]:
    return sorted(range(len(values)), key=lambda i: (-values[i], i))[:max(k, 0)]


def _log_sum_exp(values: memoryview[float]) -> float:
    top = max(values)
    return top + math.log(math.fsum(math.exp(v - top) for v in values))


# Few distinct values, so that ties are common; and k around the row's length.
_VALUES = st.lists(st.sampled_from([-3.5, -1.0, 0.0, 0.25, 2.0, 7.75]) | st.floats(
    -50, 50, width=32), min_size=1, max_size=300)


@given(_VALUES, st.integers(-2, 310))
def test_top_logits_ranks_best_first_with_ties_by_lower_id(values: list[float], k: int) -> None:
    row = _row(values)
    ids, lse = top_logits(row, k)
    assert ids == _best_first(row, k)
    assert lse == pytest.approx(_log_sum_exp(row), rel=1e-12, abs=1e-12)


def test_top_logits_of_a_vocabulary_row(tiny_bpe_path: Path) -> None:
    model = native.Model(tiny_bpe_path)
    params = native.ContextParams(n_ctx=128, n_seq_max=1, n_batch=64, n_threads=2)
    with native.Context(model, params) as ctx:
        batch = native.Batch(64)
        last = batch.add_sequence(model.vocab.tokenize("The quick brown fox"), 0, 0, True)
        ctx.decode(batch)
        row = ctx.logits_ith(last)
        assert len(row) == model.vocab.n_tokens
        ids, lse = top_logits(row, 10)
        assert ids == _best_first(row, 10)
        assert lse == pytest.approx(_log_sum_exp(row), rel=1e-12)
        probs = [math.exp(row[i] - lse) for i in ids]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) < 1


@pytest.mark.parametrize("n_probs", [0, 3, 8, 50])
def test_sample_with_probs_ranks_what_the_chain_left(tiny_bpe_path: Path, n_probs: int) -> None:
    model = native.Model(tiny_bpe_path)
    params = native.ContextParams(n_ctx=128, n_seq_max=1, n_batch=64, n_threads=2)
    with native.Context(model, params) as ctx, \
            native.SamplerChain(model.vocab).top_k(8).temp(1.0).dist(42) as chain:
        batch = native.Batch(64)
        last = batch.add_sequence(model.vocab.tokenize("Once upon a time"), 0, 0, True)
        ctx.decode(batch)
        row = ctx.logits_ith(last)
        token, top = chain.sample_with_probs(ctx, last, n_probs)
        # top-k 8 then a softmax at temperature 1: the 8 best logits, as probabilities.
        best = _best_first(row, 8)
        norm = math.fsum(math.exp(row[i] - row[best[0]]) for i in best)
        want = [(i, math.exp(row[i] - row[best[0]]) / norm) for i in best][:n_probs]
        assert [t for t, _ in top] == [t for t, _ in want]
        assert [p for _, p in top] == pytest.approx([p for _, p in want], rel=1e-5)
        assert token in best
