"""service/embedding_vectors.py: the normalization (native/_cffi_src/embd.c) rounds as llama.cpp's
common_embd_normalize does (checked against a plain-Python transcription of its arithmetic, one
value at a time), and packed floats put as wire bytes equal the field filled value by value."""

from __future__ import annotations

import math
from array import array

import numpy as np
import pytest
from llama.v1 import embedding_pb2

from service.embedding_vectors import float32_bytes, normalized, put_floats


def reference(vector: list[float], norm: int) -> list[float]:
    """common_embd_normalize one value at a time: float32 products, a double sum in order,
    a float32 scale."""
    def f32(x: float) -> float:
        return array("f", [x])[0]
    total = 0.0
    if norm == -1:
        total = 1.0
    elif norm == 0:
        for v in vector:
            if total < abs(v):
                total = abs(v)
        total /= 32760.0
    elif norm == 2:
        for v in vector:
            total += f32(v * v)
        total = math.sqrt(total)
    else:
        for v in vector:
            try:
                total += abs(v) ** norm
            except OverflowError:
                total = math.inf
        total = total ** (1.0 / norm)
    scale = f32(1.0 / total if total > 0 else 0.0)
    return [f32(v * scale) for v in vector]


def same(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(x == y or (math.isnan(x) and math.isnan(y))
                                    for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("norm", [-1, 0, 1, 2, 3, 7])
def test_normalized_rounds_as_llama_cpp(norm: int) -> None:
    rng = np.random.default_rng(norm + 10)
    for trial in range(100):
        n = int(rng.integers(0, 600))
        scale = 10.0 ** rng.uniform(-30, 30)  # tiny to overflowing squares
        v = (rng.standard_normal(n) * scale).astype(np.float32)
        if trial % 5 == 0 and n:
            v[rng.integers(0, n)] = 0.0
        got = normalized(f32s(v), norm)
        assert got.typecode == "f"
        assert same(got.tolist(), reference(v.tolist(), norm)), (trial, n, scale)


def test_normalized_edges() -> None:
    assert normalized(array("f", [0.0] * 4), 2).tolist() == [0.0] * 4  # no zero division
    assert normalized(array("f"), 2).tolist() == []
    # a p-norm beyond the double range is inf (C's pow), so every value scales to 0
    assert normalized(array("f", [3e38, 1.0, -2e38]), 100).tolist() == [0.0, 0.0, -0.0]
    assert normalized(array("f", [3.0, 4.0]), 2).tolist() == \
        [array("f", [0.6])[0], array("f", [0.8])[0]]
    # NaN: skipped by the max-absolute norm's comparison, as in C; kept in the output
    got = normalized(array("f", [float("nan"), 2.0, -4.0]), 0).tolist()
    assert math.isnan(got[0]) and got[1:] == reference([2.0, -4.0], 0)


def f32s(values: np.ndarray) -> array[float]:
    return array("f", values.astype(np.float32).tobytes())


def test_put_floats_equals_the_field_filled_value_by_value() -> None:
    v = f32s(np.random.default_rng(1).standard_normal(384))
    ours = embedding_pb2.OpenAIEmbedding(object="embedding", index=3)
    put_floats(ours, "embedding", v)
    plain = embedding_pb2.OpenAIEmbedding(object="embedding", index=3)
    plain.embedding.extend(v.tolist())
    assert ours == plain
    assert ours.SerializeToString() == plain.SerializeToString()

    resp = embedding_pb2.EmbedResponse()
    item = resp.results.add(index=1)
    for part in (v, v[:3], v[:0], v[:200]):  # lengths of one- and two-byte varints
        put_floats(item.embedding.add(), "values", part)
    assert [list(fv.values) for fv in item.embedding] == \
        [v.tolist(), v[:3].tolist(), [], v[:200].tolist()]


def test_float32_bytes_are_little_endian() -> None:
    assert float32_bytes(array("f", [1.0, -2.5])) == b"\x00\x00\x80\x3f\x00\x00\x20\xc0"
