"""Write a llama-architecture GGUF with random weights around a real vocabulary and chat template.

The weights are seeded normals, so a model is the same bytes on every machine. Matrices have
std 1/sqrt(fan_in), which keeps activations near unit scale through the pre-norm layers. With
attention that flat, though, the hidden state soon depends on little but the last token, and
greedy decoding falls into a short cycle of a few tokens; query and key weights `attention_gain`
times larger make attention sharp and position-dependent, and greedy output then stays varied
(measured: 58-64 distinct tokens out of 64 for several prompts, against 11-52 without the gain).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from gguf import GGMLQuantizationType

from native.testmodels import sources, vocab_copy


@dataclass(frozen=True)
class LlamaSpec:
    """Everything that decides a random llama model's bytes (all of it goes into the cache key)."""

    general_name: str
    vocab: str  # stem of models/ggml-vocab-<vocab>.gguf
    template: str  # stem of models/templates/<template>.jinja
    n_embd: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_ff: int
    n_ctx_train: int
    rope_freq_base: float
    rms_norm_eps: float
    tied_embeddings: bool
    embedding_type: str  # GGML type name of token_embd (and output, when untied)
    weight_type: str  # GGML type name of the layers' matrices
    seed: int
    embedding_std: float = 0.02
    attention_gain: float = 2.0  # query/key weights' std, in units of 1/sqrt(fan_in)
    # tokenizer.ggml.<name> ids set on top of the vocabulary's (e.g. fim_rep_token_id: a role
    # the vocabulary has a token for but does not name)
    token_ids: tuple[tuple[str, int], ...] = ()
    # Layers from this index on are inert: their attn_output and ffn_down are zero, so they add
    # nothing to the residual stream and the model computes what its first `inert_from` layers
    # alone compute, at the cost of all of them (a speculative draft that agrees with it).
    inert_from: int | None = None

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def key_parameters(self) -> dict[str, object]:
        params = asdict(self)
        # Fields left at their defaults keep the cache keys of the models made before them.
        if not self.token_ids:
            del params["token_ids"]
        if self.inert_from is None:
            del params["inert_from"]
        return params


@dataclass(frozen=True)
class _TensorPlan:
    name: str
    shape: tuple[int, ...]  # numpy order: (rows, row_length); GGUF lists it reversed
    std: float  # 0 means "all ones" (a norm weight)
    ggml_type: str
    zero: bool = False  # all zeros (an inert layer's output projections)


def _layer_plans(spec: LlamaSpec, layer: int) -> Iterator[_TensorPlan]:
    d, ff, kv = spec.n_embd, spec.n_ff, spec.n_head_kv * spec.head_dim
    std, qk_std = 1.0 / math.sqrt(d), spec.attention_gain / math.sqrt(d)
    p, w = f"blk.{layer}.", spec.weight_type
    inert = spec.inert_from is not None and layer >= spec.inert_from
    yield _TensorPlan(p + "attn_norm.weight", (d,), 0.0, "F32")
    yield _TensorPlan(p + "attn_q.weight", (d, d), qk_std, w)
    yield _TensorPlan(p + "attn_k.weight", (kv, d), qk_std, w)
    yield _TensorPlan(p + "attn_v.weight", (kv, d), std, w)
    yield _TensorPlan(p + "attn_output.weight", (d, d), std, w, zero=inert)
    yield _TensorPlan(p + "ffn_norm.weight", (d,), 0.0, "F32")
    yield _TensorPlan(p + "ffn_gate.weight", (ff, d), std, w)
    yield _TensorPlan(p + "ffn_up.weight", (ff, d), std, w)
    yield _TensorPlan(p + "ffn_down.weight", (d, ff), 1.0 / math.sqrt(ff), w, zero=inert)


def tensor_plans(spec: LlamaSpec, n_vocab: int) -> Iterator[_TensorPlan]:
    """The model's tensors in file order, with shapes, init scales and storage types."""
    embd = (n_vocab, spec.n_embd)
    yield _TensorPlan("token_embd.weight", embd, spec.embedding_std, spec.embedding_type)
    for layer in range(spec.n_layer):
        yield from _layer_plans(spec, layer)
    yield _TensorPlan("output_norm.weight", (spec.n_embd,), 0.0, "F32")
    if not spec.tied_embeddings:
        yield _TensorPlan("output.weight", embd, spec.embedding_std, spec.embedding_type)


def encode(values: np.ndarray, ggml_type: str) -> tuple[np.ndarray, GGMLQuantizationType]:
    """`values` (float32) stored as `ggml_type`: the array to write and its raw GGML type."""
    qtype = GGMLQuantizationType[ggml_type]
    if qtype == GGMLQuantizationType.F32:
        return values.astype(np.float32, copy=False), qtype
    if qtype == GGMLQuantizationType.F16:
        return values.astype(np.float16), qtype
    return gguf.quants.quantize(values, qtype), qtype


def _materialise(plan: _TensorPlan, seed: int) -> np.ndarray:
    if plan.zero:
        return np.zeros(plan.shape, dtype=np.float32)
    if plan.std == 0.0:
        return np.ones(plan.shape, dtype=np.float32)
    # Seeded per tensor name, so one tensor's values never depend on the others' order or shape.
    rng = np.random.default_rng([seed, zlib.crc32(plan.name.encode())])
    values = rng.standard_normal(plan.shape, dtype=np.float32)
    values *= np.float32(plan.std)
    return values


def _file_type(weight_type: str) -> gguf.LlamaFileType:
    return {
        "F32": gguf.LlamaFileType.ALL_F32,
        "F16": gguf.LlamaFileType.MOSTLY_F16,
        "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[weight_type]


def add_hyperparameters(writer: Any, spec: LlamaSpec, n_vocab: int,
                        file_type: gguf.LlamaFileType | None = None) -> None:
    """The llama architecture's keys for `spec` (file type: its weight_type's unless given)."""
    writer.add_name(spec.general_name)
    writer.add_context_length(spec.n_ctx_train)
    writer.add_embedding_length(spec.n_embd)
    writer.add_block_count(spec.n_layer)
    writer.add_feed_forward_length(spec.n_ff)
    writer.add_head_count(spec.n_head)
    writer.add_head_count_kv(spec.n_head_kv)
    writer.add_rope_dimension_count(spec.head_dim)
    writer.add_rope_freq_base(spec.rope_freq_base)
    writer.add_layer_norm_rms_eps(spec.rms_norm_eps)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(file_type if file_type is not None else _file_type(spec.weight_type))


def vocab_size(fields: tuple[vocab_copy.MetadataField, ...]) -> int:
    for field in fields:
        if field.key == "tokenizer.ggml.tokens":
            return len(field.value)
    raise ValueError("vocab file has no tokenizer.ggml.tokens")


def write_random_llama(spec: LlamaSpec, out_path: Path) -> None:
    """Write the model described by `spec` to `out_path` (overwriting it)."""
    tokenizer = vocab_copy.read_tokenizer_fields(sources.vocab_gguf(spec.vocab))
    n_vocab = vocab_size(tokenizer)
    writer = gguf.GGUFWriter(str(out_path), arch="llama")
    add_hyperparameters(writer, spec, n_vocab)
    vocab_copy.add_fields(writer, tokenizer)
    for name, token in spec.token_ids:
        writer.add_uint32(f"tokenizer.ggml.{name}", token)
    writer.add_chat_template(sources.chat_template(spec.template))
    for plan in tensor_plans(spec, n_vocab):
        data, qtype = encode(_materialise(plan, spec.seed), plan.ggml_type)
        writer.add_tensor(plan.name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
