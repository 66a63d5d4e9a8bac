"""The scheduler's request lifecycle (no model): cancellation at every stage, the engine's
failure paths (drop, reset_cache), LoRA adapter sets, the sequence-id order of a plan's work,
and a seeded random workload checked against the invariants. Helpers: tests/scheduler_harness.py.
"""

from __future__ import annotations

import random

import pytest
from scheduler_harness import (
    Runner,
    admitted,
    finished_in_slot_2,
    fresh,
    make_scheduler,
    only_work,
    request,
    work_of,
)

from service.engine.scheduler import Admission, Plan, SeqRequest


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


def test_dropping_a_finished_request_leaves_its_slots_new_owner_alone() -> None:
    run = Runner(make_scheduler(1, n_ctx_seq=32, kv_cells=32))
    a = request("a", 4, n_predict=1)
    run.add(a)
    run.run_until(lambda: a.slot is not None and a.slot.idle)
    b = request("b", 4, n_predict=5)
    run.add(b)
    run.steps(2)
    assert b.slot is a.slot and b.slot is not None
    cached = list(b.slot.cache_tokens)
    assert run.sched.drop(a) == -1
    assert b.slot.cache_tokens == cached and b.slot.task is b


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
