"""A BERT reranker for tests: the real all-MiniLM-L6-v2 encoder and WordPiece vocabulary with a
random classification head (the `cls` dense layer and a one-label `cls.output`, as
llama.cpp's BERT graph reads them) and `rank` pooling. Its scores are meaningless but
deterministic; the rerank endpoints, their input layout and their ordering are what it tests."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np

from native.testmodels import bert_convert

HEAD_SEED = 17


def classifier_head(n_embd: int, seed: int = HEAD_SEED) -> dict[str, np.ndarray]:
    """GGUF tensors of a one-label head; numpy shapes are llama.cpp's dimensions reversed."""
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(n_embd)
    return {
        "cls.weight": rng.normal(0.0, scale, (n_embd, n_embd)).astype(np.float32),
        "cls.bias": rng.normal(0.0, 0.02, (n_embd,)).astype(np.float32),
        "cls.output.weight": rng.normal(0.0, 1.0, (1, n_embd)).astype(np.float32),
        "cls.output.bias": np.zeros((1,), dtype=np.float32),
    }


def write_reranker(model_dir: Path, out_path: Path, n_embd: int) -> None:
    bert_convert.convert_bert(model_dir, out_path, "llama-grpc minilm-reranker (random head)",
                              head=classifier_head(n_embd), pooling=gguf.PoolingType.RANK)
