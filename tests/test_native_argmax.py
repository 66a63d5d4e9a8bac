"""native.sampler.argmax_logit (ranking.c's llama_grpc_argmax, 16 lanes at a time) gives what
a plain scan gives: the first position of the largest logit, a NaN above nothing (a row
starting with one gives 0), -0.0 and 0.0 equal; rows of every length around the 16-logit
blocks, and a vocabulary's worth."""

from __future__ import annotations

import array
import math
import random

from native.sampler import argmax_logit


def _scan(row: list[float]) -> int:
    best = 0
    for i in range(1, len(row)):
        if row[i] > row[best]:
            best = i
    return best


_VALUES = [math.nan, -math.inf, math.inf, -0.0, 0.0, 1.0, 2.0, -3.5, 1e-30]


def test_rows_of_special_values_and_ties() -> None:
    rng = random.Random(7)
    for _ in range(5000):
        row = [rng.choice(_VALUES) for _ in range(rng.randrange(1, 70))]
        assert argmax_logit(memoryview(array.array("f", row))) == _scan(row), row


def test_a_vocabulary_row() -> None:
    rng = random.Random(8)
    for n in (32000, 128256, 128256 + 7):
        row = array.array("f", (rng.uniform(-10.0, 10.0) for _ in range(n)))
        for at in (0, 15, 16, n // 2, n - 1):
            row[at] = 50.0  # ties: the first one
            assert argmax_logit(memoryview(row)) == min(at, _first(row, 50.0))
        assert argmax_logit(memoryview(row)) == _scan(list(row))


def _first(row: array.array[float], value: float) -> int:
    return next(i for i, v in enumerate(row) if v == value)
