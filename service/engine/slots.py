"""Slots: one llama sequence each, remembering the tokens in its KV cells for prompt reuse.

Choosing a slot for a request is pure logic (tested without a model): the requested id_slot,
else the idle slot whose cached tokens best match the prompt (above --slot-prompt-similarity),
else an idle slot next to busy ones (least recently used first).

Why next to busy ones: with a KV cache per sequence, llama.cpp decodes a batch in one go only
while its sequence ids run without gaps (llama_batch_allocr::split_equal, sequential); busy
slots 1, 3, 5 and 7 cost four decodes per step where 4 to 7 cost one. Measured on an H200 at
4 streams: the same benchmark repetition ran 3-4x slower when the slots had gaps, for
llama-server too, whose least-recently-used choice leaves them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    # Whole chunks first, compared in C: a token-by-token loop over a long cached prompt, for
    # every idle slot, cost ~75 us per 1,000 tokens on the way to the first token.
    while i + _CHUNK <= n and a[i:i + _CHUNK] == b[i:i + _CHUNK]:
        i += _CHUNK
    while i < n and a[i] == b[i]:
        i += 1
    return i


_CHUNK = 64


@dataclass(eq=False)
class Slot:
    id: int
    cache_tokens: list[int] = field(default_factory=list)  # what the KV cells hold, in order
    last_used: float = 0.0
    task: Any = None  # the running generation, None when idle
    adapters: tuple[tuple[int, float], ...] = ()  # the LoRA set its cells were computed with

    @property
    def idle(self) -> bool:
        return self.task is None


def choose_slot(slots: Sequence[Slot], prompt: Sequence[int], id_slot: int,
                similarity: float) -> Slot | None:
    """The slot to run `prompt` in now, or None if it must wait.

    A request naming a busy slot waits for that slot; one naming none takes an idle slot.
    """
    if id_slot >= 0:
        slot = slots[id_slot]
        return slot if slot.idle else None
    idle = [s for s in slots if s.idle]
    if not idle:
        return None
    if similarity > 0 and prompt:
        best, best_sim = None, 0.0
        for s in idle:
            if not s.cache_tokens:
                continue
            sim = common_prefix_len(s.cache_tokens, prompt) / len(prompt)
            if sim > best_sim:
                best, best_sim = s, sim
        if best is not None and best_sim > similarity:
            return best
    return min(idle, key=lambda s: (-_busy_neighbours(slots, s.id), s.last_used))


def _busy_neighbours(slots: Sequence[Slot], i: int) -> int:
    """0, 1 or 2: taking slot i then starts a run of busy slots, extends one, or joins two."""
    return sum(1 for j in (i - 1, i + 1) if 0 <= j < len(slots) and not slots[j].idle)
