"""rest_bridge/render_embedding.py's fast JSON: the float arrays written with orjson are the
text json.dumps writes (Python's float repr: nlohmann json's digits and notation for a float
widened to double), value for value, over float32 bit patterns of every kind; the vectors read
from the wire equal the fields' values; the bodies equal the plain renderings."""

from __future__ import annotations

import base64
import json
from array import array
from typing import Any

import numpy as np
from llama.v1 import embedding_pb2

from rest_bridge.jsonio import dumps
from rest_bridge.render_embedding import (
    float_array,
    native_json,
    openai_embed_json,
    packed_floats,
)


def plain(values: list[float]) -> bytes:
    return dumps(values)  # json.dumps: float repr, NaN and infinities as null


def test_float_array_writes_json_dumps_text_for_every_kind_of_float32() -> None:
    rng = np.random.default_rng(17)
    for _ in range(4):
        bits = rng.integers(0, 2**32, 20_000, dtype=np.uint64).astype(np.uint32)
        every = bits.view(np.float32)  # NaNs, infinities, subnormals, every exponent
        with np.errstate(invalid="ignore"):  # signalling NaNs, widened
            wide = every.astype(np.float64)
        assert float_array(every) == plain(wide.tolist())
        # magnitudes around orjson's notation changes (1e-4, 1e-5, 1e16) and embeddings'
        spread = (rng.standard_normal(20_000)
                  * 10.0 ** rng.uniform(-8, 17, 20_000)).astype(np.float32)
        assert float_array(spread) == plain(spread.astype(np.float64).tolist())


def test_float_array_of_float32_arrays_writes_json_dumps_text() -> None:
    # What packed_floats reads: array.array "f" (no numpy in the service process)
    rng = np.random.default_rng(23)
    for _ in range(50):
        every = rng.integers(0, 2**32, 384, dtype=np.uint64).astype(np.uint32).view(np.float32)
        spread = (rng.standard_normal(384) * 10.0 ** rng.uniform(-8, 17, 384)).astype(np.float32)
        for values in (every, spread):
            with np.errstate(invalid="ignore"):
                want = plain(values.astype(np.float64).tolist())
            assert float_array(array("f", values.tobytes())) == want


def test_float_array_edges() -> None:
    f32 = np.finfo(np.float32)
    edges = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e-4, -1e-4, 1e-5, 9.999999e-5,
                      1e15, 9.999999e15, 1e16, f32.max, f32.tiny, f32.smallest_subnormal,
                      1.0, 0.1, -0.03448624536395073], dtype=np.float32)
    text = float_array(edges)
    assert text == plain(edges.astype(np.float64).tolist())
    assert text.startswith(b"[0.0,-0.0,null,null,null,")
    assert b",9.999999747378752e-06," in text and b"-0.03448624536395073" in text
    assert float_array(np.zeros(0, dtype=np.float32)) == b"[]"
    assert float_array(np.array([1e-5, 2.5])) == b"[1e-05,2.5]"  # float64 too


def _vector(rng: np.random.Generator, n: int, scale: float) -> list[float]:
    values: list[float] = (rng.standard_normal(n) * scale).astype(np.float32).tolist()
    return values


def test_packed_floats_reads_the_field() -> None:
    rng = np.random.default_rng(1)
    values = _vector(rng, 384, 0.05)
    e = embedding_pb2.OpenAIEmbedding(object="embedding", index=300)
    e.embedding.extend(values)
    assert packed_floats(e, "embedding").tolist() == values
    assert packed_floats(embedding_pb2.OpenAIEmbedding(index=2), "embedding").tolist() == []
    b64 = embedding_pb2.OpenAIEmbedding(index=1, embedding_base64=b"\x00" * 12)
    assert packed_floats(b64, "embedding").tolist() == []  # another field's bytes: not read
    fv = embedding_pb2.FloatVector(values=values[:3])
    assert packed_floats(fv, "values").tolist() == values[:3]


def _old_openai(resp: Any) -> Any:
    """The rendering before the fast path: plain dicts for json.dumps."""
    data = []
    for e in resp.data:
        if e.HasField("embedding_base64"):
            data.append({"embedding": base64.b64encode(e.embedding_base64).decode("ascii"),
                         "index": e.index, "object": "embedding", "encoding_format": "base64"})
        else:
            data.append({"embedding": list(e.embedding), "index": e.index,
                         "object": "embedding"})
    return {"model": resp.model, "object": "list",
            "usage": {"prompt_tokens": resp.usage.prompt_tokens,
                      "total_tokens": resp.usage.total_tokens}, "data": data}


def test_bodies_equal_the_plain_renderings() -> None:
    rng = np.random.default_rng(3)
    resp = embedding_pb2.OpenAIEmbedResponse(object="list", model='m"\u00e9\n\u2028"')
    resp.usage.prompt_tokens = resp.usage.total_tokens = 7
    for i in range(4):
        resp.data.add(object="embedding", index=i).embedding.extend(_vector(rng, 384, 0.05))
    resp.data.add(object="embedding", index=4, embedding_base64=b"\x00\x01\x02\x03")
    resp.data.add(object="embedding", index=5)  # an empty vector
    assert openai_embed_json(resp) == dumps(_old_openai(resp))
    json.loads(openai_embed_json(resp))

    native = embedding_pb2.EmbedResponse()
    for i in range(3):
        item = native.results.add(index=i, tokens_evaluated=3)
        for _ in range(i + 1):  # pooling none: a vector per token
            item.embedding.add().values.extend(_vector(rng, 384, 3.0))
    native.results.add(index=3)
    expected = [{"index": r.index, "embedding": [list(v.values) for v in r.embedding]}
                for r in native.results]
    assert native_json(native) == dumps(expected)
