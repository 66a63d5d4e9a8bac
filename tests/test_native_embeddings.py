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
