"""Write a LLaVA-style multimodal projector GGUF with random weights, as clip.cpp loads it.

Projector type "mlp" (LLaVA 1.5): a CLIP ViT (patch convolution, class embedding, learned
positions, pre-norm, layers of LayerNorm / attention with biases / GELU MLP) whose second-to-last
layer's patch outputs go through mm.0 -> GELU -> mm.2 into the text model's embedding width. It
is the projector type with the fewest tensors and metadata keys that the pinned clip.cpp builds
with its generic llava graph (tools/mtmd/models/llava.cpp), and its decode needs neither
non-causal attention nor M-RoPE. Tensor names and keys are clip-impl.h's (TN_*, KEY_*). All
tensors are F32: the file is tens of kilobytes.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import gguf
import numpy as np

TensorSpec = tuple[str, tuple[int, ...], float]  # a tensor: name, numpy shape, std


@dataclass(frozen=True)
class ClipSpec:
    """Everything that decides a random projector's bytes (all of it goes into the cache key)."""

    general_name: str
    n_embd_text: int  # the text model's n_embd: mm.2's output width
    n_embd: int  # the ViT's width
    n_head: int
    n_ff: int
    n_layer: int
    image_size: int
    patch_size: int
    n_mm_hidden: int  # mm.0's output width
    seed: int
    layer_norm_eps: float = 1e-5

    @property
    def n_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def key_parameters(self) -> dict[str, object]:
        return asdict(self)


def _tensors(spec: ClipSpec) -> Iterator[TensorSpec]:
    """(name, numpy shape, std) in file order; std 0 means ones (a norm's weight), -1 zeros."""
    d, ff, p = spec.n_embd, spec.n_ff, spec.patch_size
    yield "v.patch_embd.weight", (d, 3, p, p), 1.0 / math.sqrt(3 * p * p)
    yield "v.class_embd", (d,), 0.02
    yield "v.position_embd.weight", (spec.n_patches + 1, d), 0.02
    yield "v.pre_ln.weight", (d,), 0.0
    yield "v.pre_ln.bias", (d,), -1.0
    yield from encoder_blocks("v", spec.n_layer, d, ff)
    yield "mm.0.weight", (spec.n_mm_hidden, d), 1.0 / math.sqrt(d)
    yield "mm.0.bias", (spec.n_mm_hidden,), 0.02
    yield "mm.2.weight", (spec.n_embd_text, spec.n_mm_hidden), 1.0 / math.sqrt(spec.n_mm_hidden)
    yield "mm.2.bias", (spec.n_embd_text,), 0.02


def encoder_blocks(tower: str, n_layer: int, d: int, ff: int, k_bias: bool = True
                   ) -> Iterator[TensorSpec]:
    """A clip.cpp encoder's transformer blocks (`v` vision, `a` audio), as _tensors yields them;
    `k_bias` False for Whisper's bias-free k projection."""
    for il in range(n_layer):
        b = f"{tower}.blk.{il}."
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            yield b + name + ".weight", (d, d), 1.0 / math.sqrt(d)
            if k_bias or name != "attn_k":
                yield b + name + ".bias", (d,), 0.02
        for norm in ("ln1", "ln2"):
            yield b + norm + ".weight", (d,), 0.0
            yield b + norm + ".bias", (d,), -1.0
        yield b + "ffn_up.weight", (ff, d), 1.0 / math.sqrt(d)
        yield b + "ffn_up.bias", (ff,), 0.02
        yield b + "ffn_down.weight", (d, ff), 1.0 / math.sqrt(ff)
        yield b + "ffn_down.bias", (d,), 0.02


def add_encoder_keys(writer: gguf.GGUFWriter, prefix: str, n_embd: int, n_ff: int,
                     n_layer: int, n_embd_text: int, n_head: int, eps: float) -> None:
    """The encoder's sizes under `prefix` (clip.vision. or clip.audio.)."""
    writer.add_uint32(prefix + "embedding_length", n_embd)
    writer.add_uint32(prefix + "feed_forward_length", n_ff)
    writer.add_uint32(prefix + "block_count", n_layer)
    writer.add_uint32(prefix + "projection_dim", n_embd_text)
    writer.add_uint32(prefix + "attention.head_count", n_head)
    writer.add_float32(prefix + "attention.layer_norm_epsilon", eps)


def write_tensors(writer: gguf.GGUFWriter, tensors: Iterator[TensorSpec], seed: int) -> None:
    """Every tensor (std 0: ones, -1: zeros, else seeded normal values), then the file."""
    for name, shape, std in tensors:
        writer.add_tensor(name, _values(name, shape, std, seed))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _values(name: str, shape: tuple[int, ...], std: float, seed: int) -> np.ndarray:
    if std == 0.0:
        return np.ones(shape, dtype=np.float32)
    if std < 0.0:
        return np.zeros(shape, dtype=np.float32)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(std)


def write_random_clip(spec: ClipSpec, out_path: Path) -> None:
    """Write the projector described by `spec` to `out_path` (overwriting it)."""
    if spec.image_size % spec.patch_size or spec.n_embd % spec.n_head:
        raise ValueError("image_size must be a multiple of patch_size, n_embd of n_head")
    if spec.n_ff == spec.n_embd:
        # clip.cpp takes ffn_down of width n_embd for a legacy file with up/down swapped.
        raise ValueError("n_ff must differ from n_embd")
    writer = gguf.GGUFWriter(str(out_path), arch="clip")
    writer.add_name(spec.general_name)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_string("clip.projector_type", "mlp")
    writer.add_bool("clip.use_gelu", True)
    v = "clip.vision."
    add_encoder_keys(writer, v, spec.n_embd, spec.n_ff, spec.n_layer, spec.n_embd_text,
                     spec.n_head, spec.layer_norm_eps)
    writer.add_uint32(v + "image_size", spec.image_size)
    writer.add_uint32(v + "patch_size", spec.patch_size)
    # CLIP's normalisation constants, as LLaVA's converter writes them.
    writer.add_array(v + "image_mean", [0.48145466, 0.4578275, 0.40821073])
    writer.add_array(v + "image_std", [0.26862954, 0.26130258, 0.27577711])
    write_tensors(writer, _tensors(spec), spec.seed)
