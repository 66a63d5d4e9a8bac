"""native.testmodels' k-quant writer (kquant_llama, the GPU benchmark's "1b" and "8b" models):
the random blocks decode to the intended statistics, the tensor types follow llama.cpp's Q4_K_M,
and a small model built the same way loads in our libllama and gives finite, varied logits.
The 1B and 8B files themselves are not generated here (0.8 and 4.9 GB): their plans are checked.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest

import native
from native.context import ContextParams
from native.sampler import top_logits
from native.testmodels import catalog, kquant_llama
from native.testmodels.kquant_llama import kquant_plans, use_more_bits, write_kquant_llama

N_VOCAB_LLAMA3 = 128256
Q4_K, Q6_K = gguf.GGMLQuantizationType.Q4_K, gguf.GGMLQuantizationType.Q6_K

# The smallest shape the k-quant blocks allow (rows of 256): untied, so both the Q4_K embeddings
# and the Q6_K output are there, and 8 layers, so use_more_bits picks some Q6_K layers.
SMALL = dataclasses.replace(
    catalog.LLAMA_8B,
    general_name="kquant test (random Q4_K_M blocks)",
    vocab="llama-spm",
    template=catalog.MISTRAL_TEMPLATE,
    n_embd=256,
    n_layer=8,
    n_head=4,
    n_head_kv=2,
    n_ff=512,
    n_ctx_train=4096,
    rope_freq_base=10000.0,
)


@pytest.mark.parametrize(("make", "qtype", "std"), [
    (kquant_llama.q4_k_blocks, Q4_K, 1 / math.sqrt(2048)),
    (kquant_llama.q4_k_blocks, Q4_K, 1 / math.sqrt(14336)),
    (kquant_llama.q6_k_blocks, Q6_K, 0.02),
    (kquant_llama.q6_k_blocks, Q6_K, 1 / math.sqrt(14336)),
])
def test_random_blocks_decode_to_the_intended_spread(
        make: Callable[[np.random.Generator, int, float], np.ndarray],
        qtype: gguf.GGMLQuantizationType, std: float) -> None:
    blocks = make(np.random.default_rng(5), 2048, std)
    values = gguf.quants.dequantize(blocks, qtype)
    assert values.shape == (2048, 256)
    assert np.isfinite(values).all()
    assert abs(values.std() / std - 1) < 0.03
    assert abs(values.mean()) < 0.05 * std


def test_q4_k_scales_pack_as_ggml_reads_them() -> None:
    rng = np.random.default_rng(9)
    sc = rng.integers(0, 64, size=(64, 8), dtype=np.uint8)
    m = rng.integers(0, 64, size=(64, 8), dtype=np.uint8)
    packed = kquant_llama.pack_q4_k_scales(sc, m)
    for j in range(8):  # ggml's get_scale_min_k4
        if j < 4:
            got_sc, got_m = packed[:, j] & 63, packed[:, j + 4] & 63
        else:
            got_sc = (packed[:, j + 4] & 0xF) | ((packed[:, j - 4] >> 6) << 4)
            got_m = (packed[:, j + 4] >> 4) | ((packed[:, j] >> 6) << 4)
        assert np.array_equal(got_sc, sc[:, j]) and np.array_equal(got_m, m[:, j])


def test_use_more_bits_matches_llama_quant() -> None:
    # llama.cpp: i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2; for 32 layers: 0-3, 6, 9, ..., 27-31.
    picked = [i for i in range(32) if use_more_bits(i, 32)]
    assert picked == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]


def _plan_bytes(spec: object) -> tuple[int, Counter[str]]:
    sizes = {"Q4_K": 144, "Q6_K": 210}
    total, types = 0, Counter[str]()
    for plan in kquant_plans(spec, N_VOCAB_LLAMA3):  # type: ignore[arg-type]
        types[plan.ggml_type] += 1
        n = math.prod(plan.shape)
        total += 4 * n if plan.ggml_type == "F32" else n // 256 * sizes[plan.ggml_type]
    return total, types


def test_1b_and_8b_plans_have_real_q4_k_m_sizes() -> None:
    one, one_types = _plan_bytes(catalog.LLAMA_1B)
    eight, eight_types = _plan_bytes(catalog.LLAMA_8B)
    # Published Q4_K_M files: Llama-3.2-1B 0.81 GB, Llama-3.1-8B 4.92 GB (tensor data only here).
    assert 0.75e9 < one < 0.85e9, one
    assert 4.8e9 < eight < 5.0e9, eight
    # 1B: tied Q6_K embeddings, no output matrix; attn_v and ffn_down in Q6_K on 8 of 16 layers.
    assert one_types == Counter({"Q4_K": 16 * 5 + 2 * 8, "Q6_K": 1 + 2 * 8, "F32": 33})
    assert eight_types == Counter({"Q4_K": 1 + 32 * 5 + 2 * 16, "Q6_K": 1 + 2 * 16, "F32": 65})


@pytest.mark.slow
def test_a_small_model_of_random_blocks_loads_and_gives_finite_logits(tmp_path: Path) -> None:
    path = tmp_path / "kquant.gguf"
    write_kquant_llama(SMALL, path)
    reader = gguf.GGUFReader(path)
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["token_embd.weight"] == Q4_K and types["output.weight"] == Q6_K
    assert types["blk.0.ffn_down.weight"] == Q6_K and types["blk.2.ffn_down.weight"] == Q4_K
    model = native.Model(path)
    ctx = native.Context(model, ContextParams(n_ctx=256, n_threads=1, n_threads_batch=1))
    batch = native.Batch(64)
    out: list[int] = []
    try:
        batch.add_sequence([1, *range(500, 530)], 0, 0, True)
        pos = 31
        for _ in range(24):
            ctx.decode(batch)
            logits = np.asarray(ctx.logits_ith(batch.n_tokens - 1), dtype=np.float32)
            assert np.isfinite(logits).all()
            assert 0.1 < float(logits.std()) < 100.0, "logits neither flat nor blown up"
            token = top_logits(ctx.logits_ith(batch.n_tokens - 1), 1)[0][0]
            out.append(token)
            batch.clear()
            batch.add(token, pos, 0, True)
            pos += 1
    finally:
        ctx.close()
        model.close()
    assert len(set(out)) > 4, f"greedy output repeats one token: {out}"


def test_a_plan_with_rows_not_of_whole_blocks_is_refused() -> None:
    bad = dataclasses.replace(SMALL, n_embd=64, n_head=4, n_head_kv=2)
    plan = next(kquant_plans(bad, 32000))
    with pytest.raises(ValueError, match="multiple of 256"):
        kquant_llama.materialise(plan, 1)


def test_the_catalog_names_the_benchmark_models() -> None:
    assert {"1b", "8b"} <= set(catalog.RECIPES)
    params = catalog.RECIPES["8b"].parameters()
    assert params["weight_type"] == "Q4_K_M" and params["writer"] == "kquant_llama"
