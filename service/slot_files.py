"""Slot save, restore and erase (SlotAction, ExportSlot, ImportSlot): what runs where.

The engine owns the KV cache, so reading a slot's state, restoring one and erasing one are
engine calls (Engine.call: between two steps, never during a decode), each refusing a slot
that runs a request. Encoding, hashing and file I/O run on the worker pool. A restored slot's
tokens become its cached prompt: the next request starting with them reuses the cells
(`tokens_cached`), as after any request.
"""

from __future__ import annotations

import os

from native import StateError
from service.engine.engine import Engine
from service.engine.params import ParamError
from service.engine.slots import Slot
from service.errors import ServiceError
from service.runtime import Runtime
from service.slot_files_format import Limits, SlotFileError, SlotImage, model_fingerprint

# Headroom over the KV bytes of a full slot: cell metadata, recurrent state, our header.
_STATE_SLACK_BYTES = 16 << 20
_BYTES_PER_CELL_META = 64


def slot_limits(rt: Runtime) -> Limits:
    """This server's fingerprint and bounds (hashes 1 MiB of the model file: worker pool)."""
    m, c = rt.model, rt.config.context
    facts = {"description": m.description(), "n_params": m.n_params, "n_layer": m.n_layer,
             "n_embd": m.n_embd, "n_head_kv": m.n_head_kv, "n_vocab": m.vocab.n_tokens,
             "type_k": c.cache_type_k, "type_v": c.cache_type_v}
    n_embd_kv = m.n_head_kv * (m.n_embd // max(m.n_head, 1))
    per_token = m.n_layer * 2 * n_embd_kv * 4 + _BYTES_PER_CELL_META  # f32: the widest type
    n_ctx_seq = rt.engine.n_ctx_slot
    return Limits(model_fingerprint(rt.config.model.path, facts), n_ctx_seq, m.vocab.n_tokens,
                  n_ctx_seq * per_token + _STATE_SLACK_BYTES)


def check_slot_id(rt: Runtime, id_slot: int) -> None:
    if not 0 <= id_slot < rt.n_slots:
        raise ParamError(f"Invalid slot ID: {id_slot} (slots are 0..{rt.n_slots - 1})")


def _idle(engine: Engine, id_slot: int) -> Slot:
    slot = engine.slots[id_slot]
    if not slot.idle:
        raise ServiceError("unavailable", f"slot {id_slot} is processing a request; retry "
                                          "when it is idle (GET /slots: is_processing)")
    return slot


def snapshot(engine: Engine, id_slot: int) -> tuple[tuple[int, ...], bytes,
                                                     tuple[tuple[int, float], ...]]:
    """On the engine thread: an idle slot's cached tokens, its state and its LoRA set."""
    slot = _idle(engine, id_slot)
    tokens = tuple(slot.cache_tokens)
    state = engine.ctx.seq_state(id_slot) if tokens else b""
    return tokens, state, slot.adapters


def restore(engine: Engine, id_slot: int, tokens: tuple[int, ...], state: bytes,
            adapters: tuple[tuple[int, float], ...]) -> None:
    """On the engine thread: replace an idle slot's cache with a checked image."""
    slot = _idle(engine, id_slot)
    freed = engine.scheduler.make_room(len(tokens), keep=slot)
    if freed is None:
        raise ServiceError("unavailable", f"not enough free KV cells for {len(tokens)} tokens "
                                          "while the running requests hold theirs; retry later")
    for seq in freed:
        engine.executor.drop(seq)
    engine.ctx.seq_rm(id_slot)
    slot.cache_tokens, slot.adapters = [], ()
    if not tokens:
        return
    try:
        engine.ctx.set_seq_state(state, id_slot)
    except StateError:
        engine.ctx.seq_rm(id_slot)
        raise SlotFileError("llama.cpp could not restore this state into the slot (no room in "
                            "the KV cache, or a state made with other context settings)") from None
    if engine.ctx.seq_pos_max(id_slot) != len(tokens) - 1:  # cells and tokens must agree
        engine.ctx.seq_rm(id_slot)
        raise SlotFileError("the restored state does not hold the file's tokens")
    slot.cache_tokens, slot.adapters = list(tokens), adapters


def erase(engine: Engine, id_slot: int) -> int:
    """On the engine thread: drop an idle slot's cache; how many tokens it held."""
    slot = _idle(engine, id_slot)
    n = len(slot.cache_tokens)
    engine.ctx.seq_rm(id_slot)
    slot.cache_tokens, slot.adapters = [], ()
    return n


# -- LoRA sets in an image: ids here, (id, scale, file name) in the file -------------------------
def image_of(rt: Runtime, tokens: tuple[int, ...], state: bytes,
             adapters: tuple[tuple[int, float], ...]) -> SlotImage:
    named = tuple((i, s, os.path.basename(rt.loras[i].path)) for i, s in adapters)
    return SlotImage(tokens, state, named)


def adapters_here(rt: Runtime, image: SlotImage) -> tuple[tuple[int, float], ...]:
    """The image's LoRA set as this server's ids; refused if this server lacks an adapter."""
    out = []
    for i, scale, name in image.adapters:
        if not (0 <= i < len(rt.loras) and os.path.basename(rt.loras[i].path) == name):
            raise SlotFileError(f"the slot was saved with LoRA adapter {i} ({name!r}), which "
                                "this server does not have at that id")
        out.append((i, scale))
    return tuple(out)

