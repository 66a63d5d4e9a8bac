"""One generation's state while the engine runs it: the scheduler's view (SeqRequest) plus what
execution needs. Touched only by the engine thread, except `cancelled`, which any thread may set.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from native import SamplerChain
from service.engine.events import Event, Timings, TokenProbs
from service.engine.params import CompletionParams
from service.engine.scheduler import SeqRequest
from service.engine.textstream import TextStream

EventSink = Callable[[list[Event]], None]
"""Receives a task's events, a list per engine step. Called on the engine thread: must not block."""


@runtime_checkable
class LoopSink(Protocol):
    """A sink living on an asyncio loop: the engine batches all of a step's deliveries to one
    loop, and deliver_local is called on that loop (service/engine/waker.py)."""

    loop: Any

    def __call__(self, events: list[Event]) -> None: ...

    def deliver_local(self, events: list[Event]) -> None: ...


class Task(SeqRequest):
    """A generation: its parameters, where its events go, and its sampling and text state."""

    def __init__(self, id: str, prompt: Sequence[int], params: CompletionParams,
                 sink: EventSink, priority: int = 0) -> None:
        super().__init__(id, prompt, n_predict=params.n_predict, id_slot=params.id_slot,
                         cache_prompt=params.cache_prompt, priority=priority,
                         n_cache_reuse=params.n_cache_reuse,
                         adapters=params.lora)
        self.params = params
        self.sink = sink
        self.submitted = time.perf_counter()
        self.arrival: Any = None  # the request's engine.Arrival, closed when the engine takes it
        # Set when the task gets a slot.
        self.chain: SamplerChain | None = None
        self.stream = TextStream()
        self.generated: list[int] = []
        self.pending_tokens: list[int] = []  # generated, not yet sent
        self.pending_probs: list[TokenProbs] = []
        self.truncated = False
        self.out_index = -1  # this step: batch index of the logits to sample, -1 if none
        self.budget: Any = None  # a chat's thinking budget (service.reasoning_budget)
        self.lazy: Any = None  # a chat's lazy tool-call grammar (service.engine.lazy_grammar)
        self.t_start = 0.0
        self.t_first = 0.0
        self.ended = False  # its last event is sent
        # Speculative decoding: this step's draft under verification, and the request's totals.
        self.verify: tuple[int, ...] = ()
        self.draft_n = 0
        self.draft_n_accepted = 0

    def release_chain(self) -> None:
        """Free the sampler chain (the engine does when the task ends; whoever made a task that
        never reached the engine does)."""
        if self.chain is not None:
            self.chain.close()
            self.chain = None
        if self.lazy is not None:
            self.lazy.close()

    def timings(self, now: float) -> Timings:
        prompt_end = self.t_first or now
        return Timings(
            prompt_n=len(self.prompt) - self.n_cached,
            prompt_ms=(prompt_end - self.t_start) * 1e3,
            predicted_n=len(self.generated),
            predicted_ms=(now - self.t_first) * 1e3 if self.t_first else 0.0,
            draft_n=self.draft_n, draft_n_accepted=self.draft_n_accepted,
        )
