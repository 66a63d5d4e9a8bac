"""The real all-MiniLM-L6-v2, converted to GGUF, embeds like sentence-transformers does."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import native

REFERENCE = Path(__file__).parent / "data" / "minilm_reference.json"


@pytest.fixture(scope="module")
def reference() -> dict[str, object]:
    return json.loads(REFERENCE.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def test_minilm_matches_reference(minilm_path: Path, reference: dict) -> None:  # type: ignore[type-arg]
    model = native.Model(minilm_path)
    ctx = native.Context(model, native.ContextParams(n_ctx=512, n_batch=512, n_ubatch=512,
                                                     n_seq_max=8, embeddings=True,
                                                     pooling="mean"))
    sentences = reference["sentences"]
    assert len(sentences) >= 5
    batch = native.Batch(512)
    for seq, s in enumerate(sentences):
        tokens = model.vocab.tokenize(s["text"], add_special=True)
        assert tokens == s["token_ids"], "tokenization differs from the HF tokenizer"
        batch.add_sequence(tokens, 0, seq, output_last=False)
    batch.set_all_outputs(True)
    ctx.encode(batch)
    for seq, s in enumerate(sentences):
        got = np.asarray(ctx.embeddings_seq(seq), dtype=np.float64)
        got /= np.linalg.norm(got)
        want = np.asarray(s["embedding"], dtype=np.float64)
        cosine = float(got @ want / np.linalg.norm(want))
        assert cosine >= 0.999, f"{s['text']!r}: cosine {cosine}"
    ctx.close()
    model.close()


def test_decode_without_memory_encodes_without_a_log_line(minilm_path: Path) -> None:
    # llama_decode on a memory-less context (BERT) calls encode after a debug line: a call
    # into Python's log callback, taking the GIL mid-decode. Context.decode goes straight to
    # llama_encode (interrupt.c): the same vectors, no line.
    from native._ffi import captured_log

    model = native.Model(minilm_path)
    params = native.ContextParams(n_ctx=512, n_batch=512, n_ubatch=512, n_seq_max=2,
                                  embeddings=True, pooling="mean")
    tokens = model.vocab.tokenize("pandas live in the mountains", add_special=True)
    vectors = []
    for decode in (False, True):
        ctx = native.Context(model, params)
        assert not ctx.has_memory
        batch = native.Batch(64)
        batch.add_sequence(tokens, 0, 0, output_last=False)
        batch.set_all_outputs(True)
        with captured_log() as lines:
            (ctx.decode if decode else ctx.encode)(batch)
        if decode:
            assert lines == []
        vectors.append(list(ctx.embeddings_seq(0)))
        ctx.close()
    assert vectors[0] == vectors[1]
    model.close()
