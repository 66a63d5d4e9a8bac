"""The scheduler as a plain data structure (no model): helpers build a scheduler and requests,
a runner plays the engine (tests/scheduler_harness.py), and assertions check what each Plan
scheduled. Here: prompt chunking within n_batch, decode tokens never starved by a long prompt,
admission order (FIFO, priority, a named busy slot), slot affinity and prompt-cache reuse, KV
reservation and eviction with a shared cache, never_fits. Cancellation, failures, LoRA sets,
work order and a random workload: tests/test_scheduler_lifecycle.py.
"""

from __future__ import annotations

import pytest
from scheduler_harness import (
    SAMPLED,
    Runner,
    admitted,
    finished_in_slot_2,
    fresh,
    make_scheduler,
    only_work,
    request,
)

from service.engine.scheduler import Admission, Plan


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


