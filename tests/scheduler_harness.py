"""Helpers of the scheduler tests (tests/test_scheduler*.py): build a scheduler and requests
with no model, and a Runner that plays the engine — schedule, advance, "sample" a token where
logits were asked for, finish at n_predict."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from service.engine.scheduler import Limits, Plan, Scheduler, SeqRequest, Work
from service.engine.slots import Slot

SAMPLED = 900_000  # the runner's sampled tokens: SAMPLED, SAMPLED + 1, ... per request
_bases = itertools.count(1)


# -- helpers ----------------------------------------------------------------------------------
def make_scheduler(n_slots: int = 2, *, n_batch: int = 64, n_ctx_seq: int = 64,
                   kv_cells: int | None = None, kv_shared: bool = False,
                   similarity: float = 0.5) -> Scheduler:
    """A scheduler over `n_slots` empty slots; kv_cells defaults to n_slots * n_ctx_seq."""
    cells = n_slots * n_ctx_seq if kv_cells is None else kv_cells
    return Scheduler(Limits(n_batch, n_ctx_seq, cells, kv_shared, similarity),
                     [Slot(i) for i in range(n_slots)])


def fresh(n: int) -> list[int]:
    """n tokens that share no prefix with any other call's."""
    base = next(_bases) * 1000
    return [base + i for i in range(n)]


def request(rid: str, prompt: int | Sequence[int] = 4, *, n_predict: int = -1,
            id_slot: int = -1, cache_prompt: bool = True, priority: int = 0,
            adapters: tuple[tuple[int, float], ...] = ()) -> SeqRequest:
    """A request with `prompt` tokens (a count: that many fresh ones)."""
    tokens = fresh(prompt) if isinstance(prompt, int) else list(prompt)
    return SeqRequest(rid, tokens, n_predict=n_predict, id_slot=id_slot,
                      cache_prompt=cache_prompt, priority=priority, adapters=adapters)


@dataclass
class Runner:
    """Plays the engine around a scheduler: one `step()` is one decode."""

    sched: Scheduler
    plans: list[Plan] = field(default_factory=list)
    sampled: dict[str, list[int]] = field(default_factory=dict)
    finished: list[SeqRequest] = field(default_factory=list)

    def add(self, *reqs: SeqRequest) -> None:
        for r in reqs:
            assert self.sched.never_fits(r) == ""
            self.sched.add(r)

    def step(self) -> Plan:
        """schedule, advance (the decode succeeded), then sample where logits were read."""
        plan = self.sched.schedule()
        self.sched.advance(plan)
        for w in plan.work:
            if w.n_outputs:
                self._sample(w.request)
        self.plans.append(plan)
        return plan

    def steps(self, n: int) -> list[Plan]:
        return [self.step() for _ in range(n)]

    def run_until(self, done: Callable[[], bool], limit: int = 200) -> list[Plan]:
        plans: list[Plan] = []
        while not done():
            assert len(plans) < limit, "the scheduler made no progress"
            plans.append(self.step())
        return plans

    def finish(self, r: SeqRequest) -> None:
        self.sched.finish(r)
        self.finished.append(r)

    def _sample(self, r: SeqRequest) -> None:
        if r.n_predict == 0:  # the engine ends it once the prompt is cached
            self.finish(r)
            return
        toks = self.sampled.setdefault(r.id, [])
        r.last_token = SAMPLED + len(toks)
        toks.append(r.last_token)
        r.generating = True
        # At n_predict, or with the slot's context full (the engine would shift it instead).
        if 0 <= r.n_predict <= len(toks) or r.n_past >= self.sched.limits.n_ctx_seq:
            self.finish(r)


def work_of(plan: Plan, r: SeqRequest) -> list[Work]:
    return [w for w in plan.work if w.request is r]


def only_work(plan: Plan, r: SeqRequest) -> Work:
    ws = work_of(plan, r)
    assert len(ws) == 1, f"{r.id} has {len(ws)} works in {plan}"
    return ws[0]


def admitted(plans: Sequence[Plan]) -> list[str]:
    return [a.request.id for p in plans for a in p.admitted]

def finished_in_slot_2() -> tuple[Runner, SeqRequest]:
    """A runner whose slot 2 (not the one a newcomer would get by default) holds a finished
    request's 20 prompt tokens and its first 2 generated tokens (the 3rd is never decoded)."""
    run = Runner(make_scheduler(3, similarity=0.5))
    first = request("first", 20, id_slot=2, n_predict=3)
    run.add(first)
    run.run_until(lambda: first in run.finished)
    assert run.sched.slots[2].cache_tokens == [*first.prompt, *run.sampled["first"][:2]]
    assert run.sched.slots[2].idle
    return run, first
