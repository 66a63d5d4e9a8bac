"""The scheduler as a plain data structure (no model): helpers build a scheduler and requests,
a runner plays the engine (schedule, advance, "sample" a token where logits were asked for,
finish at n_predict), and assertions check what each Plan scheduled.

Covered: prompt chunking within n_batch, decode tokens never starved by a long prompt,
admission order (FIFO, priority, a named busy slot), slot affinity and prompt-cache reuse, KV
reservation and eviction with a shared cache, never_fits, cancellation at every stage, LoRA
adapter sets, the sequence-id order of a plan's work, and a seeded random workload checked
against the same invariants.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest

from service.engine.scheduler import Admission, Limits, Plan, Scheduler, SeqRequest, Work
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


# -- chunked prompts --------------------------------------------------------------------------
def test_a_long_prompt_is_chunked_contiguously_within_n_batch_with_logits_at_its_end() -> None:
    run = Runner(make_scheduler(1, n_batch=8))
    r = request("r", 21, n_predict=3)
    run.add(r)

    chunks = [only_work(p, r) for p in run.steps(3)]

    assert all(p.n_tokens <= 8 for p in run.plans)
    assert [len(c.tokens) for c in chunks] == [8, 8, 5]
    assert [c.pos for c in chunks] == [0, 8, 16]
    assert [t for c in chunks for t in c.tokens] == list(r.prompt)
    assert [c.n_outputs for c in chunks] == [0, 0, 1]
    assert [c.seq_id for c in chunks] == [0, 0, 0]
    assert r.generating and r.n_past == 21
    # Then one decode token per step, at the next position, feeding the last sampled token.
    decode = only_work(run.step(), r)
    assert (decode.pos, tuple(decode.tokens), decode.n_outputs) == (21, (SAMPLED,), 1)


def test_two_long_prompts_share_the_budget_oldest_first() -> None:
    run = Runner(make_scheduler(2, n_batch=8))
    a, b = request("a", 10, n_predict=2), request("b", 10, n_predict=2)
    run.add(a, b)

    p1, p2, p3 = run.steps(3)

    assert [p.n_tokens for p in (p1, p2, p3)] == [8, 8, 5]
    assert [(w.request.id, w.pos, len(w.tokens), w.n_outputs) for w in p1.work] == [
        ("a", 0, 8, 0)]
    assert [(w.request.id, w.pos, len(w.tokens), w.n_outputs) for w in p2.work] == [
        ("a", 8, 2, 1), ("b", 0, 6, 0)]
    assert [(w.request.id, w.pos, len(w.tokens), w.n_outputs) for w in p3.work] == [
        ("a", 10, 1, 1), ("b", 6, 4, 1)]


# -- decode tokens vs a long prompt -----------------------------------------------------------
def test_generating_sequences_get_one_token_in_every_plan_while_a_long_prompt_is_chunked(
) -> None:
    run = Runner(make_scheduler(3, n_batch=8, n_ctx_seq=128))
    a, b = request("a", 3), request("b", 3)
    run.add(a, b)
    run.step()
    assert a.generating and b.generating
    long = request("long", 40)
    run.add(long)

    chunks = []
    while not long.generating:
        n_past = {r.id: r.n_past for r in (a, b)}
        last = {r.id: r.last_token for r in (a, b)}
        plan = run.step()
        assert plan.n_tokens <= 8
        for r in (a, b):
            w = only_work(plan, r)
            assert (w.pos, tuple(w.tokens), w.n_outputs) == (n_past[r.id], (last[r.id],), 1)
        chunks.append(only_work(plan, long))
        assert len(chunks) < 20

    assert [len(c.tokens) for c in chunks] == [6] * 6 + [4]  # what the 2 decode tokens leave
    assert [c.pos for c in chunks] == list(range(0, 40, 6))
    assert [c.n_outputs for c in chunks] == [0] * 6 + [1]


# -- admission order --------------------------------------------------------------------------
def test_one_slot_admits_in_arrival_order() -> None:
    run = Runner(make_scheduler(1))
    reqs = [request(rid, 3, n_predict=2) for rid in "abc"]
    run.add(*reqs)

    run.run_until(lambda: len(run.finished) == 3)

    assert admitted(run.plans) == ["a", "b", "c"]
    assert all(len(p.admitted) <= 1 for p in run.plans)
    assert [r.id for r in run.finished] == ["a", "b", "c"]


def test_lower_priority_value_is_admitted_first_and_fifo_among_equals() -> None:
    run = Runner(make_scheduler(1))
    busy = request("busy", 3, n_predict=2)
    run.add(busy)
    run.step()  # busy holds the only slot while the others arrive
    run.add(*(request(rid, 3, n_predict=2, priority=prio)
              for rid, prio in [("b5", 5), ("c1", 1), ("a0", 0), ("d1", 1), ("e0", 0)]))

    run.run_until(lambda: len(run.finished) == 6)

    assert admitted(run.plans) == ["busy", "a0", "e0", "c1", "d1", "b5"]


def test_a_request_naming_a_busy_slot_waits_without_blocking_others() -> None:
    run = Runner(make_scheduler(2))
    holder = request("holder", 3, id_slot=0)
    run.add(holder)
    run.step()
    wants0, anyone = request("wants0", 3, id_slot=0), request("anyone", 3)
    run.add(wants0, anyone)

    plan = run.step()

    assert plan.admitted == (Admission(anyone, 1, 0),)
    assert [r.id for r in run.sched.waiting] == ["wants0"]
    run.finish(holder)
    plan = run.step()
    assert plan.admitted == (Admission(wants0, 0, 0),)
    assert wants0.slot is run.sched.slots[0]


# -- slot affinity and prompt-cache reuse ------------------------------------------------------
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


def test_a_request_sharing_a_long_prefix_gets_the_slot_that_cached_it() -> None:
    run, first = finished_in_slot_2()
    new = fresh(4)
    nxt = request("next", [*first.prompt[:16], *new])  # 16/20 shared > 0.5

    plan = run.step()  # nothing queued yet: an empty plan
    assert plan == Plan()
    run.add(nxt)
    plan = run.sched.schedule()

    assert plan.admitted == (Admission(nxt, 2, 16),)
    assert plan.cleared == ()
    assert nxt.n_cached == nxt.n_past == 16
    assert run.sched.slots[2].cache_tokens == list(first.prompt[:16])
    w = only_work(plan, nxt)
    assert (w.pos, list(w.tokens), w.n_outputs) == (16, new, 1)


def test_reuse_of_a_whole_cached_prompt_leaves_its_last_token_to_decode() -> None:
    run, first = finished_in_slot_2()
    again = request("again", first.prompt)
    run.add(again)

    plan = run.sched.schedule()

    assert plan.admitted == (Admission(again, 2, 19),)  # capped at len(prompt) - 1
    assert again.n_cached == again.n_past == 19
    w = only_work(plan, again)
    assert (w.pos, tuple(w.tokens), w.n_outputs) == (19, (first.prompt[19],), 1)


def test_cache_prompt_false_takes_the_similar_slot_but_reuses_nothing() -> None:
    run, first = finished_in_slot_2()
    again = request("again", first.prompt, cache_prompt=False)
    run.add(again)

    plan = run.sched.schedule()

    assert plan.admitted == (Admission(again, 2, 0),)
    assert again.n_cached == again.n_past == 0
    assert run.sched.slots[2].cache_tokens == []
    w = only_work(plan, again)
    assert (w.pos, list(w.tokens), w.n_outputs) == (0, list(first.prompt), 1)


def test_a_prefix_at_or_below_the_threshold_does_not_attract_the_request() -> None:
    run, first = finished_in_slot_2()
    other = request("other", [*first.prompt[:10], *fresh(10)])  # 10/20 is not > 0.5
    run.add(other)

    plan = run.sched.schedule()

    assert plan.admitted == (Admission(other, 0, 0),)
    assert len(run.sched.slots[2].cache_tokens) == 22  # left for a better match


def test_id_slot_is_honoured_over_a_better_cached_match() -> None:
    run, first = finished_in_slot_2()
    pinned = request("pinned", first.prompt, id_slot=1)
    run.add(pinned)

    plan = run.sched.schedule()

    assert plan.admitted == (Admission(pinned, 1, 0),)
    assert len(run.sched.slots[2].cache_tokens) == 22


# -- KV reservation ---------------------------------------------------------------------------
def test_reservation_is_prompt_plus_n_predict_capped_at_a_slot_context() -> None:
    run = Runner(make_scheduler(4, n_ctx_seq=32))
    capped = request("capped", 10, n_predict=100)
    unlimited = request("unlimited", 10, n_predict=-1)
    some = request("some", 10, n_predict=5)
    none = request("none", 10, n_predict=0)
    run.add(capped, unlimited, some, none)

    run.sched.schedule()

    assert [r.reserved for r in (capped, unlimited, some, none)] == [32, 32, 15, 10]
    assert run.sched.load().kv_cells_reserved == 32 + 32 + 15 + 10


def test_shared_kv_admits_only_what_fits_and_the_head_is_not_overtaken() -> None:
    run = Runner(make_scheduler(3, n_ctx_seq=48, kv_cells=64, kv_shared=True))
    a = request("a", 10, n_predict=20)  # reserves 30
    b = request("b", 10, n_predict=30)  # 40: 30 + 40 > 64, waits
    c = request("c", 4, n_predict=4)  # 8 would fit beside a, but b is ahead
    run.add(a, b, c)

    plans = run.steps(3)

    assert admitted(plans) == ["a"]
    load = run.sched.load()
    assert (load.n_processing, load.n_waiting) == (1, 2)
    assert (load.kv_cells_reserved, load.kv_cells_used) == (30, 12)  # 10 prompt + 2 decoded
    assert load.slot_cells == ((0, True, 12), (1, False, 0), (2, False, 0))

    run.finish(a)  # e.g. an end-of-generation token
    load = run.sched.load()
    assert (load.n_processing, load.kv_cells_reserved, load.kv_cells_used) == (0, 0, 12)

    plan = run.step()
    assert plan.admitted == (Admission(b, 1, 0), Admission(c, 2, 0))
    assert plan.cleared == ()  # 40 + 8 + slot 0's 12 cached cells fit in 64
    load = run.sched.load()
    assert (load.kv_cells_reserved, load.kv_cells_used) == (48, 12 + 10 + 4)
    assert load.slot_cells == ((0, False, 12), (1, True, 10), (2, True, 4))


def test_shared_kv_evicts_idle_caches_least_recently_used_first() -> None:
    run = Runner(make_scheduler(3, n_ctx_seq=32, kv_cells=40, kv_shared=True))
    older = request("older", 12, id_slot=1, n_predict=2)
    run.add(older)
    run.run_until(lambda: older in run.finished)
    newer = request("newer", 12, id_slot=0, n_predict=2)
    run.add(newer)
    run.run_until(lambda: newer in run.finished)
    assert run.sched.load().slot_cells == ((0, False, 13), (1, False, 13), (2, False, 0))

    # 20 reserved + 26 cached > 40: slot 1, used before slot 0, is dropped.
    c = request("c", 10, n_predict=10)
    run.add(c)
    plan = run.step()
    assert plan.admitted == (Admission(c, 2, 0),)
    assert plan.cleared == (1,)
    load = run.sched.load()
    assert load.slot_cells == ((0, False, 13), (1, False, 0), (2, True, 10))
    assert (load.kv_cells_reserved, load.kv_cells_used) == (20, 23)

    # 40 reserved + 13 cached > 40: slot 0 goes too (d takes slot 1, next to busy slot 2).
    d = request("d", 10, n_predict=10)
    run.add(d)
    plan = run.step()
    assert plan.admitted == (Admission(d, 1, 0),)
    assert plan.cleared == (0,)
    load = run.sched.load()
    assert (load.kv_cells_reserved, load.kv_cells_used) == (40, 11 + 10)

    # Every cell is reserved: a free slot is not enough.
    e = request("e", 4, n_predict=4)
    run.add(e)
    assert run.step().admitted == ()
    assert run.sched.slots[0].idle
    run.finish(c)
    plan = run.step()
    assert [a.request for a in plan.admitted] == [e]
    assert run.sched.load().kv_cells_reserved == 20 + 8


@pytest.mark.parametrize("kv_shared", [True, False])
def test_reservation_blocks_only_with_a_shared_cache(kv_shared: bool) -> None:
    run = Runner(make_scheduler(2, n_ctx_seq=32, kv_cells=40, kv_shared=kv_shared))
    a, b = request("a", 4), request("b", 4)  # n_predict -1: 32 cells each
    run.add(a, b)

    plan = run.step()

    if kv_shared:
        assert [x.request for x in plan.admitted] == [a]
        assert run.sched.waiting == [b]
    else:  # a cache per slot: a free slot is all it takes, whatever kv_cells says
        assert [x.request for x in plan.admitted] == [a, b]
        assert run.sched.load().kv_cells_reserved == 64


@pytest.mark.parametrize("kv_shared", [True, False])
def test_only_a_shared_cache_evicts_idle_slots(kv_shared: bool) -> None:
    run = Runner(make_scheduler(2, n_ctx_seq=32, kv_cells=40, kv_shared=kv_shared))
    first = request("first", 30, n_predict=1)
    run.add(first)
    run.run_until(lambda: first in run.finished)
    second = request("second", 20)  # reserves 32: with slot 0's 30 cached, more than 40
    run.add(second)

    plan = run.step()

    assert plan.admitted == (Admission(second, 1, 0),)
    assert plan.cleared == ((0,) if kv_shared else ())
    assert len(run.sched.slots[0].cache_tokens) == (0 if kv_shared else 30)


# -- never_fits -------------------------------------------------------------------------------
def test_never_fits() -> None:
    sched = make_scheduler(2, n_ctx_seq=16)

    assert "empty" in sched.never_fits(request("empty", []))
    assert "16" in sched.never_fits(request("full", 16))
    assert sched.never_fits(request("long", 17)) != ""
    assert "id_slot" in sched.never_fits(request("slot2", 4, id_slot=2))
    assert "id_slot" in sched.never_fits(request("slot-2", 4, id_slot=-2))
    assert sched.never_fits(request("fits", 15)) == ""
    assert sched.never_fits(request("slot1", 15, id_slot=1)) == ""


# -- cancellation -----------------------------------------------------------------------------
def one_slot_whole_cache() -> Runner:
    """One slot and a shared cache of one slot's cells: an unlimited request reserves them all,
    so a follower is admitted only once the slot and every reserved cell are free again."""
    return Runner(make_scheduler(1, n_batch=8, n_ctx_seq=32, kv_cells=32, kv_shared=True))


def assert_cancelled_and_freed(run: Runner, r: SeqRequest, *, cleared: tuple[int, ...]) -> None:
    """The next plan drops `r`: its slot idle and (if it ran) empty; then a follower runs."""
    plan = run.step()
    assert plan.cancelled == (r,)
    assert plan.cleared == cleared
    assert plan.work == ()
    assert r not in run.sched.running and r not in run.sched.waiting
    assert r.reserved == 0
    slot = run.sched.slots[0]
    assert slot.idle
    if cleared:
        assert slot.cache_tokens == []
    load = run.sched.load()
    assert (load.n_processing, load.n_waiting, load.kv_cells_reserved) == (0, 0, 0)
    assert run.step().cancelled == ()  # it leaves once

    follower = request("follower", 4)
    run.add(follower)
    plan = run.step()
    assert [a.request for a in plan.admitted] == [follower]
    assert follower.reserved == 32


def test_cancelled_while_waiting_never_takes_a_slot_nor_runs() -> None:
    run = one_slot_whole_cache()
    holder, r = request("holder", 4), request("r", 4)
    run.add(holder, r)
    run.step()
    assert run.sched.waiting == [r]

    r.cancelled = True
    plan = run.step()

    assert plan.cancelled == (r,)
    assert plan.cleared == ()
    assert r.slot is None and r.reserved == 0
    assert run.sched.slots[0].task is holder
    assert run.sched.waiting == []
    assert all(w.request is not r for p in run.plans for w in p.work)
    run.finish(holder)
    follower = request("follower", 4)
    run.add(follower)
    assert [a.request for a in run.step().admitted] == [follower]


def test_cancelled_right_after_admission_before_any_work() -> None:
    run = one_slot_whole_cache()
    cached = request("cached", 12, n_predict=1)
    run.add(cached)
    run.run_until(lambda: cached in run.finished)
    r = request("r", [*cached.prompt[:10], *fresh(2)])
    run.add(r)
    # The engine's intake schedules to admit arrivals without decoding that plan.
    plan = run.sched.schedule()
    assert plan.admitted == (Admission(r, 0, 10),)
    assert run.sched.slots[0].cache_tokens == list(cached.prompt[:10])

    r.cancelled = True

    assert_cancelled_and_freed(run, r, cleared=(0,))
    assert all(w.request is not r for p in run.plans for w in p.work)


def test_cancelled_after_an_admission_whose_first_plan_had_no_room_for_it() -> None:
    run = Runner(make_scheduler(2, n_batch=8))
    old = request("old", 20)
    run.add(old)
    run.step()
    r = request("r", 4)
    run.add(r)
    plan = run.step()  # old's next chunk takes the whole batch
    assert plan.admitted == (Admission(r, 1, 0),)
    assert work_of(plan, r) == []

    r.cancelled = True
    plan = run.step()

    assert plan.cancelled == (r,)
    assert plan.cleared == (1,)
    assert [w.request for w in plan.work] == [old]
    assert run.sched.slots[1].idle and run.sched.slots[1].cache_tokens == []
    assert run.sched.running == [old]
    assert all(w.request is not r for p in run.plans for w in p.work)


def test_cancelled_mid_prompt_between_chunks() -> None:
    run = one_slot_whole_cache()
    r = request("r", 20)
    run.add(r)
    run.step()
    assert r.n_past == 8 and not r.generating

    r.cancelled = True

    assert_cancelled_and_freed(run, r, cleared=(0,))


def test_cancelled_mid_decode() -> None:
    run = one_slot_whole_cache()
    r = request("r", 4)
    run.add(r)
    run.steps(3)
    assert r.generating and r.n_past == 6

    r.cancelled = True

    assert_cancelled_and_freed(run, r, cleared=(0,))


def test_a_cancel_flag_on_a_finished_request_changes_nothing() -> None:
    run = one_slot_whole_cache()
    r = request("r", 4, n_predict=2)
    run.add(r)
    run.run_until(lambda: r in run.finished)
    cache = list(run.sched.slots[0].cache_tokens)
    assert len(cache) == 5

    r.cancelled = True
    plan = run.step()

    assert plan == Plan()
    assert run.sched.slots[0].idle
    assert run.sched.slots[0].cache_tokens == cache  # kept for reuse
    assert run.sched.load().kv_cells_reserved == 0
    follower = request("follower", [*r.prompt, *fresh(2)])
    run.add(follower)
    plan = run.step()
    assert plan.admitted == (Admission(follower, 0, 4),)
    assert plan.cancelled == () and plan.cleared == ()


# -- drop and reset_cache (the engine's failure paths) -----------------------------------------
def test_drop_frees_a_running_request_and_its_cells_and_removes_a_waiting_one() -> None:
    run = Runner(make_scheduler(1, n_ctx_seq=32, kv_cells=32, kv_shared=True))
    running, waiting = request("running", 6), request("waiting", 4)
    run.add(running, waiting)
    run.steps(2)

    assert run.sched.drop(running) == 0
    assert run.sched.slots[0].idle and run.sched.slots[0].cache_tokens == []
    assert running.reserved == 0 and running not in run.sched.running
    assert run.sched.drop(waiting) == -1
    assert run.sched.waiting == []
    load = run.sched.load()
    assert (load.n_processing, load.n_waiting, load.kv_cells_reserved) == (0, 0, 0)
    assert run.step() == Plan()  # neither comes back, nor is reported cancelled


def test_reset_cache_restarts_the_prompt_from_position_zero() -> None:
    run, first = finished_in_slot_2()
    again = request("again", first.prompt)
    run.add(again)
    plan = run.sched.schedule()
    assert plan.admitted == (Admission(again, 2, 19),)

    run.sched.reset_cache(again)  # the memory could not drop the stale suffix
    plan = run.step()

    w = only_work(plan, again)
    assert (w.pos, list(w.tokens), w.n_outputs) == (0, list(first.prompt), 1)
    assert run.sched.slots[2].cache_tokens == list(first.prompt)


# -- LoRA adapters ----------------------------------------------------------------------------
LORA = ((0, 1.0),)


def test_requests_with_different_adapters_never_share_a_decode_oldest_set_first() -> None:
    run = Runner(make_scheduler(3))
    a = request("a", 4, n_predict=3, adapters=LORA)
    b = request("b", 4, n_predict=2)
    c = request("c", 4, n_predict=5, adapters=LORA)
    run.add(a, b, c)

    run.run_until(lambda: len(run.finished) == 3)

    assert admitted(run.plans[:1]) == ["a", "b", "c"]  # slots were free: all admitted at once
    for p in run.plans:
        assert len({w.request.adapters for w in p.work}) == 1
    # a (oldest) sets the group until it ends; then b is the oldest running request.
    assert [[w.request.id for w in p.work] for p in run.plans] == [
        ["a", "c"], ["a", "c"], ["a", "c"], ["b"], ["b"], ["c"], ["c"]]
    assert [r.id for r in run.finished] == ["a", "b", "c"]


# -- work order -------------------------------------------------------------------------------
def test_work_is_in_increasing_seq_id_order() -> None:
    run = Runner(make_scheduler(3))
    late_slot = request("late", 4, id_slot=2)
    run.add(late_slot)
    run.step()
    assert late_slot.generating
    run.add(request("s0", 4, id_slot=0), request("s1", 4, id_slot=1))

    plan = run.step()

    assert [w.seq_id for w in plan.work] == [0, 1, 2]
    assert [w.request.id for w in plan.work] == ["s0", "s1", "late"]
    assert [len(w.tokens) for w in plan.work] == [4, 4, 1]


# -- a random workload against the invariants -------------------------------------------------
@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("kv_shared", [True, False])
def test_random_workload_keeps_the_invariants(seed: int, kv_shared: bool) -> None:
    rng = random.Random(seed)
    n_slots, n_batch, n_ctx_seq = 4, 16, 48
    kv_cells = 2 * n_ctx_seq if kv_shared else n_slots * n_ctx_seq
    run = Runner(make_scheduler(n_slots, n_batch=n_batch, n_ctx_seq=n_ctx_seq,
                                kv_cells=kv_cells, kv_shared=kv_shared, similarity=0.3))
    shared_prefix = fresh(12)
    reqs: list[SeqRequest] = []
    gone: list[SeqRequest] = []  # left through Plan.cancelled
    for _ in range(300):
        if len(reqs) < 40 and rng.random() < 0.3:
            prompt = fresh(rng.randint(1, 30))
            if rng.random() < 0.5:
                prompt = [*shared_prefix[:rng.randint(1, 12)], *prompt]
            r = request(f"r{len(reqs)}", prompt, n_predict=rng.choice([-1, 0, 1, 3, 8, 20]),
                        priority=rng.choice([0, 0, 1]), id_slot=rng.choice([-1] * 6 + [0, 3]),
                        adapters=rng.choice([(), (), LORA]))
            reqs.append(r)
            run.add(r)
        for r in list(run.sched.running):  # some end early (an end-of-generation token)
            if r.generating and rng.random() < 0.05:
                run.finish(r)
        for r in reqs:
            if rng.random() < 0.01:
                r.cancelled = True

        cancelled = {r for r in run.sched.pending() if r.cancelled}
        before = {r: (r.n_past, r.generating, r.last_token) for r in run.sched.running}
        plan = run.step()
        gone.extend(plan.cancelled)

        assert set(plan.cancelled) == cancelled
        assert plan.n_tokens <= n_batch
        seq_ids = [w.seq_id for w in plan.work]
        assert seq_ids == sorted(set(seq_ids))
        starters = [r for r in before if r not in cancelled] + [a.request for a in plan.admitted]
        if plan.work:
            oldest = min(starters, key=lambda r: r.order)
            assert {w.request.adapters for w in plan.work} == {oldest.adapters}
        for w in plan.work:
            r = w.request
            assert r.slot is not None and w.seq_id == r.slot.id
            n_past, generating, last = before.get(r, (r.n_cached, False, -1))
            assert w.pos == n_past
            if generating:
                assert (tuple(w.tokens), w.n_outputs) == ((last,), 1)
            else:
                assert list(w.tokens) == list(r.prompt[n_past:n_past + len(w.tokens)])
                assert w.n_outputs == (1 if w.pos + len(w.tokens) == r.n_prompt else 0)
        for r, (_, generating, _) in before.items():  # no generating sequence is skipped
            if generating and r not in cancelled and plan.work \
                    and r.adapters == plan.work[0].request.adapters:
                assert len(work_of(plan, r)) == 1
        for r in run.sched.running:
            assert r.slot is not None and r.slot.task is r
            assert run.sched.slots[r.slot.id] is r.slot
            assert r.slot.cache_tokens == [*r.prompt, *run.sampled.get(r.id, [])][:r.n_past]
        load = run.sched.load()
        pending = [r for r in reqs if r not in run.finished and r not in gone]
        assert load.n_processing + load.n_waiting == len(pending)
        assert sum(busy for _, busy, _ in load.slot_cells) == load.n_processing <= n_slots
        if kv_shared:
            assert load.kv_cells_reserved <= kv_cells
            assert load.kv_cells_used <= kv_cells

    run.run_until(lambda: not run.sched.running and not run.sched.waiting, limit=2000)
    assert run.sched.load().kv_cells_reserved == 0
    assert all(r in run.finished or r in gone for r in reqs)
