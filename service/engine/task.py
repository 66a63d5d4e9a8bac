"""One generation's state while the engine runs it; touched only by the engine thread
(except `cancelled`, a flag other threads may set)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from native import SamplerChain
from service.engine.events import Event, Timings, TokenProbs
from service.engine.params import CompletionParams
from service.engine.slots import Slot
from service.engine.textstream import TextStream

EventSink = Callable[[list[Event]], None]
"""Receives a task's events, a list per engine step. Called on the engine thread: must not block."""


@runtime_checkable
class LoopSink(Protocol):
    """A sink living on an asyncio loop: the engine batches all of a step's deliveries to one
    loop into a single call_soon_threadsafe, then calls deliver_local on that loop."""

    loop: Any

    def __call__(self, events: list[Event]) -> None: ...

    def deliver_local(self, events: list[Event]) -> None: ...


@dataclass(eq=False)
class Task:
    id: str
    prompt: list[int]
    params: CompletionParams
    sink: EventSink
    cancelled: bool = False
    submitted: float = field(default_factory=time.perf_counter)
    arrival: Any = None  # the request's engine.Arrival, closed when the engine takes the task

    # Set when the task gets a slot.
    slot: Slot | None = None
    chain: SamplerChain | None = None
    stream: TextStream = field(default_factory=TextStream)
    n_past: int = 0  # tokens of this sequence in the KV cache
    n_cached: int = 0  # prompt tokens reused from the slot's cache
    generating: bool = False
    last_token: int = -1
    generated: list[int] = field(default_factory=list)
    pending_tokens: list[int] = field(default_factory=list)  # generated, not yet sent
    pending_probs: list[TokenProbs] = field(default_factory=list)
    truncated: bool = False
    out_index: int = -1  # this step: batch index of the logits to sample, -1 if none
    chunk_len: int = 0  # this step: tokens added to the batch
    t_start: float = 0.0
    t_first: float = 0.0

    @property
    def n_prompt(self) -> int:
        return len(self.prompt)

    @property
    def prompt_done(self) -> bool:
        return self.n_past >= len(self.prompt) or self.generating

    def timings(self, now: float) -> Timings:
        prompt_end = self.t_first or now
        return Timings(
            prompt_n=len(self.prompt) - self.n_cached,
            prompt_ms=(prompt_end - self.t_start) * 1e3,
            predicted_n=len(self.generated),
            predicted_ms=(now - self.t_first) * 1e3 if self.t_first else 0.0,
        )
