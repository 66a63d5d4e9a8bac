"""Slots: one llama sequence each, remembering the tokens in its KV cells for prompt reuse.

Choosing a slot for a request is pure logic (tested without a model): the requested id_slot,
else the idle slot whose cached tokens best match the prompt (above --slot-prompt-similarity),
else the least recently used idle slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass(eq=False)
class Slot:
    id: int
    cache_tokens: list[int] = field(default_factory=list)  # what the KV cells hold, in order
    last_used: float = 0.0
    task: Any = None  # the running generation, None when idle

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
    return min(idle, key=lambda s: s.last_used)
