"""Write a random llama model in Q4_K_M's mix of k-quants directly, block by block.

Quantizing F16 weights would take minutes and 16 GB for an 8B model; the GPU benchmark needs
realistic sizes, not meaningful weights, so the quantized blocks themselves are drawn at random
and streamed to the file one tensor at a time: generation is bounded by the random generator
and the disk (the 8B shape: 4.9 GB).

Blocks (ggml's layouts, 256 values each):
- Q4_K (144 bytes): f16 d, f16 dmin, 12 bytes of 6-bit scales and mins for eight 32-value
  sub-blocks, 128 bytes of nibbles. A value is d*sc*q - dmin*m. Each sub-block's min is set to
  its scale and dmin to 7.5*d, so a value is d*sc*(q - 7.5): zero mean whatever the random
  nibbles, with the random scale varying the spread from sub-block to sub-block.
- Q6_K (210 bytes): 128 bytes of low nibbles, 64 of high bit pairs, 16 int8 scales, f16 d. A
  value is d*sc*(q - 32).
d is chosen per tensor so that the values' standard deviation is what random_llama gives the
same tensor (1/sqrt(fan_in), attention_gain times that for queries and keys), which keeps
activations sane through the pre-norm layers.

Which tensor gets which type follows llama.cpp's Q4_K_M (src/llama-quant.cpp): Q4_K everywhere
but Q6_K for the output matrix (the token embeddings too when they are tied to it) and for
attn_v and ffn_down in the layers where `use_more_bits` says so.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
from gguf import GGMLQuantizationType

from native.testmodels import sources, vocab_copy
from native.testmodels.random_llama import LlamaSpec, add_hyperparameters, vocab_size

MIX = "Q4_K_M"  # LlamaSpec.weight_type of the models this module writes
QK_K = 256
Q4_K_BYTES = 144
Q6_K_BYTES = 210
# Scale ranges: wide enough to vary the sub-blocks, narrow enough that d stays a normal f16 for
# the fan-ins of an 8B model (Q4_K: rms scale 23.7 times the nibbles' 4.61).
_Q4_SCALES = (16, 32)
_Q6_SCALES = (8, 16)
_NIBBLE_STD = math.sqrt((16 * 16 - 1) / 12)
_SIX_BIT_STD = math.sqrt((64 * 64 - 1) / 12)


@dataclass(frozen=True)
class KPlan:
    """One tensor: name, numpy shape (rows, row length), target std (0: ones), GGML type."""

    name: str
    shape: tuple[int, ...]
    std: float
    ggml_type: str


def use_more_bits(layer: int, n_layer: int) -> bool:
    """llama.cpp's choice of the layers whose attn_v and ffn_down Q4_K_M keeps in Q6_K."""
    return layer < n_layer // 8 or layer >= 7 * n_layer // 8 or (layer - n_layer // 8) % 3 == 2


def kquant_plans(spec: LlamaSpec, n_vocab: int) -> Iterator[KPlan]:
    """The model's tensors in file order, typed as Q4_K_M types them."""
    d, ff, kv, n = spec.n_embd, spec.n_ff, spec.n_head_kv * spec.head_dim, spec.n_layer
    std, qk_std = 1.0 / math.sqrt(d), spec.attention_gain / math.sqrt(d)
    embd = (n_vocab, d)
    yield KPlan("token_embd.weight", embd, spec.embedding_std,
                "Q6_K" if spec.tied_embeddings else "Q4_K")
    for layer in range(n):
        p, more = f"blk.{layer}.", "Q6_K" if use_more_bits(layer, n) else "Q4_K"
        yield KPlan(p + "attn_norm.weight", (d,), 0.0, "F32")
        yield KPlan(p + "attn_q.weight", (d, d), qk_std, "Q4_K")
        yield KPlan(p + "attn_k.weight", (kv, d), qk_std, "Q4_K")
        yield KPlan(p + "attn_v.weight", (kv, d), std, more)
        yield KPlan(p + "attn_output.weight", (d, d), std, "Q4_K")
        yield KPlan(p + "ffn_norm.weight", (d,), 0.0, "F32")
        yield KPlan(p + "ffn_gate.weight", (ff, d), std, "Q4_K")
        yield KPlan(p + "ffn_up.weight", (ff, d), std, "Q4_K")
        yield KPlan(p + "ffn_down.weight", (d, ff), 1.0 / math.sqrt(ff), more)
    yield KPlan("output_norm.weight", (d,), 0.0, "F32")
    if not spec.tied_embeddings:
        yield KPlan("output.weight", embd, spec.embedding_std, "Q6_K")


def _random_bytes(rng: np.random.Generator, n_blocks: int, block: int) -> np.ndarray:
    # 64 random bits at a time: several times faster than drawing bytes one by one.
    words = (n_blocks * block + 7) // 8
    raw = rng.bit_generator.random_raw(words).view(np.uint8)[: n_blocks * block]
    return raw.reshape(n_blocks, block)


def _f16_bytes(value: float) -> np.ndarray:
    return np.frombuffer(np.float16(value).tobytes(), dtype=np.uint8)


def pack_q4_k_scales(sc: np.ndarray, m: np.ndarray) -> np.ndarray:
    """(n, 8) 6-bit scales and mins -> (n, 12) bytes, as ggml's get_scale_min_k4 reads them."""
    sc, m = sc.astype(np.uint8), m.astype(np.uint8)
    out = np.empty((sc.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    out[:, 4:8] = (m[:, 0:4] & 63) | ((m[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (sc[:, 4:8] & 0xF) | ((m[:, 4:8] & 0xF) << 4)
    return out


def q4_k_blocks(rng: np.random.Generator, n_blocks: int, std: float) -> np.ndarray:
    """n_blocks random Q4_K blocks whose values have mean 0 and standard deviation ~`std`."""
    blocks = _random_bytes(rng, n_blocks, Q4_K_BYTES)
    sc = rng.integers(*_Q4_SCALES, size=(n_blocks, 8), dtype=np.uint8)
    rms_scale = math.sqrt(float(np.mean(np.arange(*_Q4_SCALES, dtype=np.float64) ** 2)))
    d = std / (rms_scale * _NIBBLE_STD)
    blocks[:, 0:2] = _f16_bytes(d)
    blocks[:, 2:4] = _f16_bytes(7.5 * d)
    blocks[:, 4:16] = pack_q4_k_scales(sc, sc)
    return blocks


def q6_k_blocks(rng: np.random.Generator, n_blocks: int, std: float) -> np.ndarray:
    """n_blocks random Q6_K blocks whose values have standard deviation ~`std`."""
    blocks = _random_bytes(rng, n_blocks, Q6_K_BYTES)
    sc = rng.integers(*_Q6_SCALES, size=(n_blocks, 16), dtype=np.int8)
    rms_scale = math.sqrt(float(np.mean(np.arange(*_Q6_SCALES, dtype=np.float64) ** 2)))
    blocks[:, 192:208] = sc.view(np.uint8)
    blocks[:, 208:210] = _f16_bytes(std / (rms_scale * _SIX_BIT_STD))
    return blocks


def materialise(plan: KPlan, seed: int) -> np.ndarray:
    """The tensor's bytes (uint8 rows of blocks) or float32 values (a norm weight)."""
    if plan.ggml_type == "F32":
        return np.ones(plan.shape, dtype=np.float32)
    rows, row_len = plan.shape
    if row_len % QK_K:
        raise ValueError(f"{plan.name}: row length {row_len} is not a multiple of {QK_K}")
    # Seeded per tensor name, as random_llama seeds its tensors.
    rng = np.random.default_rng([seed, zlib.crc32(plan.name.encode())])
    per_row = row_len // QK_K
    make = q4_k_blocks if plan.ggml_type == "Q4_K" else q6_k_blocks
    return make(rng, rows * per_row, plan.std).reshape(rows, -1)


def write_kquant_llama(spec: LlamaSpec, out_path: Path) -> None:
    """Write `spec` as a Q4_K_M-typed model of random blocks, one tensor in memory at a time."""
    if spec.weight_type != MIX:
        raise ValueError(f"{spec.general_name}: weight_type must be {MIX!r}")
    tokenizer = vocab_copy.read_tokenizer_fields(sources.vocab_gguf(spec.vocab))
    n_vocab = vocab_size(tokenizer)
    plans = list(kquant_plans(spec, n_vocab))
    writer = gguf.GGUFWriter(str(out_path), arch="llama")
    add_hyperparameters(writer, spec, n_vocab, gguf.LlamaFileType.MOSTLY_Q4_K_M)
    vocab_copy.add_fields(writer, tokenizer)
    writer.add_chat_template(sources.chat_template(spec.template))
    for plan in plans:
        qtype = GGMLQuantizationType[plan.ggml_type]
        if qtype == GGMLQuantizationType.F32:
            writer.add_tensor_info(plan.name, plan.shape, np.dtype(np.float32),
                                   4 * math.prod(plan.shape))
            continue
        block = Q4_K_BYTES if plan.ggml_type == "Q4_K" else Q6_K_BYTES
        rows, row_len = plan.shape
        writer.add_tensor_info(plan.name, (rows, row_len // QK_K * block), np.dtype(np.uint8),
                               rows * row_len // QK_K * block, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for plan in plans:
        writer.write_tensor_data(materialise(plan, spec.seed))
    writer.close()
