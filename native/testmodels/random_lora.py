"""Write a LoRA adapter GGUF with random weights for a random llama model (random_llama.py).

llama.cpp loads an adapter only if general.type is "adapter", adapter.type is "lora", its
architecture is the model's, and every `<weight>.lora_a` / `<weight>.lora_b` pair names a
tensor of the model with matching shapes (src/llama-adapter.cpp): for a weight of numpy shape
(out, in), lora_a is (rank, in) and lora_b is (out, rank). It applies `scale * alpha / rank *
B @ A`. With alpha = rank and A, B drawn like the model's own matrices, the update is as large
as the weight it adds to: at scale 1 greedy output differs from the base model's, at scale 0
it is the base model's exactly.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from native.testmodels.random_llama import LlamaSpec


@dataclass(frozen=True)
class LoraSpec:
    """Everything that decides a random adapter's bytes (all of it goes into the cache key)."""

    base: LlamaSpec
    rank: int
    targets: tuple[str, ...]  # per-layer weights adapted, e.g. "attn_q"
    seed: int

    def key_parameters(self) -> dict[str, object]:
        return {"base": self.base.key_parameters(), "rank": self.rank,
                "targets": list(self.targets), "seed": self.seed}


def _weight_shape(base: LlamaSpec, target: str) -> tuple[int, int]:
    d, ff, kv = base.n_embd, base.n_ff, base.n_head_kv * base.head_dim
    shapes = {"attn_q": (d, d), "attn_k": (kv, d), "attn_v": (kv, d), "attn_output": (d, d),
              "ffn_gate": (ff, d), "ffn_up": (ff, d), "ffn_down": (d, ff)}
    return shapes[target]


def _pairs(spec: LoraSpec) -> Iterator[tuple[str, tuple[int, int], float]]:
    """(tensor name, numpy shape, std) of every lora_a / lora_b tensor, in file order."""
    for layer in range(spec.base.n_layer):
        for target in spec.targets:
            out, inp = _weight_shape(spec.base, target)
            name = f"blk.{layer}.{target}.weight"
            yield name + ".lora_a", (spec.rank, inp), 1.0 / math.sqrt(inp)
            yield name + ".lora_b", (out, spec.rank), 1.0 / math.sqrt(spec.rank)


def write_random_lora(spec: LoraSpec, out_path: Path) -> None:
    """Write the adapter described by `spec` to `out_path` (overwriting it)."""
    writer = gguf.GGUFWriter(str(out_path), arch="llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(spec.rank))
    writer.add_name(spec.base.general_name + " LoRA")
    for name, shape, std in _pairs(spec):
        rng = np.random.default_rng([spec.seed, zlib.crc32(name.encode())])
        values = rng.standard_normal(shape, dtype=np.float32) * np.float32(std)
        writer.add_tensor(name, values.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

