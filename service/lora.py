"""LoRA adapters: the global scales (GET/POST /lora-adapters) and a request's own (`lora`).

A request's adapter set is resolved once, when it is built: its `lora` list if it has one
(adapters it does not list get scale 0, as in llama-server), else the global scales as they are
then. The set travels as (id, scale) pairs with the zero scales left out, so that requests that
use the same adapters compare equal: the scheduler puts only equal sets in one decode, and the
executor sets the context's adapters when the set changes (llama.cpp applies adapters per
context, not per sequence).

Unlike llama-server, which ignores unknown ids, an id that names no loaded adapter, a repeated
id or a scale that is not a finite number is refused (INVALID_ARGUMENT / HTTP 400) and nothing
changes.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from service.engine.params import ParamError

AdapterSet = tuple[tuple[int, float], ...]
# Larger scales only make output garbage; a bound keeps float32 arithmetic finite.
MAX_ABS_SCALE = 1e4


class HasScale(Protocol):
    id: int
    scale: float


def checked_scales(entries: Iterable[Any], n_adapters: int, what: str) -> dict[int, float]:
    """{id: scale} from LoraScale messages, each id a loaded adapter's and listed once."""
    out: dict[int, float] = {}
    for entry in entries:
        i, scale = int(entry.id), float(entry.scale)
        if not 0 <= i < n_adapters:
            loaded = (f"ids 0..{n_adapters - 1} are loaded" if n_adapters
                      else "no adapter is loaded (--lora)")
            raise ParamError(f"{what}: no LoRA adapter has id {i}; {loaded}")
        if i in out:
            raise ParamError(f"{what}: LoRA adapter {i} is listed twice")
        if not math.isfinite(scale) or abs(scale) > MAX_ABS_SCALE:
            raise ParamError(f"{what}: the scale of LoRA adapter {i} must be a finite number "
                             f"between -{MAX_ABS_SCALE:g} and {MAX_ABS_SCALE:g}")
        out[i] = scale
    return out


def adapter_set(scales: dict[int, float]) -> AdapterSet:
    # Scales as float32, what llama.cpp applies and what a request's LoraScale carries: a
    # --lora-scaled 0.1 (a double) and a request's 0.1 are then one set, sharing decodes and
    # cached prompts.
    return tuple(sorted((i, _f32(s)) for i, s in scales.items() if s != 0.0))


def _f32(value: float) -> float:
    return float(struct.unpack("<f", struct.pack("<f", value))[0])


def request_adapters(req: Any, loras: Sequence[HasScale]) -> AdapterSet:
    """The adapter set a generation request runs with."""
    if "lora" in req.DESCRIPTOR.fields_by_name and req.lora:
        return adapter_set(checked_scales(req.lora, len(loras), "lora"))
    return adapter_set({lora.id: lora.scale for lora in loras})
