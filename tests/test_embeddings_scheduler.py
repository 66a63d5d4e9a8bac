"""The scheduler's embedding inputs, as plain data (no model; tests/scheduler_harness.py): every
input gets a slot (a sequence) and all of its outputs, concurrent inputs share decodes up to
n_batch and the slot count, an unsplittable input is never split across decodes (it waits for
the next one whole) and one longer than the batch is refused naming --ubatch-size."""

from __future__ import annotations

from scheduler_harness import fresh, make_scheduler

from service.engine.scheduler import Plan, Scheduler, SeqRequest


def embedding(rid: str, n: int, *, splittable: bool = False) -> SeqRequest:
    return SeqRequest(rid, fresh(n), n_predict=0, cache_prompt=False, embedding=True,
                      splittable=splittable)


def run_embeddings(sched: Scheduler, reqs: list[SeqRequest]) -> list[Plan]:
    """Play the engine for embedding inputs: a request whose whole prompt was decoded is read
    and dropped (its slot's cells cleared), as Engine._embedded does."""
    for r in reqs:
        assert sched.never_fits(r) == ""
        sched.add(r)
    plans: list[Plan] = []
    while sched.running or sched.waiting:
        assert len(plans) < 100, "no progress"
        plan = sched.schedule()
        sched.advance(plan)
        plans.append(plan)
        for w in plan.work:
            if w.n_outputs:
                assert w.request.n_past == w.request.n_prompt
                assert sched.drop(w.request) == w.seq_id
    return plans


def test_inputs_share_decodes_up_to_the_slot_count_with_every_position_output() -> None:
    sched = make_scheduler(4, n_batch=64)
    reqs = [embedding(f"e{i}", 5) for i in range(10)]

    plans = run_embeddings(sched, reqs)

    assert [len(p.work) for p in plans] == [4, 4, 2]
    for p in plans:
        assert [w.seq_id for w in p.work] == sorted(w.seq_id for w in p.work)
        for w in p.work:
            assert w.pos == 0 and list(w.tokens) == list(w.request.prompt)
            assert w.n_outputs == len(w.tokens)  # every position: pooling reads them all
    assert all(not s.cache_tokens and s.idle for s in sched.slots)  # memory cleared after each


def test_inputs_share_decodes_up_to_n_batch_and_are_never_split() -> None:
    sched = make_scheduler(4, n_batch=16)
    reqs = [embedding("a", 7), embedding("b", 7), embedding("c", 7), embedding("d", 2)]

    plans = run_embeddings(sched, reqs)

    # a and b fill 14 of 16; c (7) does not fit whole: it leads the next decode, and d, behind
    # it in arrival order, does not overtake it.
    assert [[w.request.id for w in p.work] for p in plans] == [["a", "b"], ["c", "d"]]
    assert all(p.n_tokens <= 16 for p in plans)


def test_an_input_longer_than_the_batch_is_refused_naming_the_ubatch_size() -> None:
    sched = make_scheduler(2, n_batch=16, n_ctx_seq=64)
    why = sched.never_fits(embedding("long", 17))
    assert "17 tokens" in why and "--ubatch-size" in why
    assert sched.never_fits(embedding("fits", 16)) == ""


def test_a_splittable_input_is_chunked_and_read_at_its_end() -> None:
    sched = make_scheduler(1, n_batch=8, n_ctx_seq=64)
    r = embedding("last-pooling", 20, splittable=True)

    plans = run_embeddings(sched, [r])

    assert [len(p.work[0].tokens) for p in plans] == [8, 8, 4]
    assert [p.work[0].n_outputs for p in plans] == [0, 0, 4]
    assert [p.work[0].pos for p in plans] == [0, 8, 16]


def test_an_input_reserves_only_its_prompt_in_a_shared_cache() -> None:
    sched = make_scheduler(4, n_batch=64, n_ctx_seq=32, kv_cells=40, kv_shared=True)
    reqs = [embedding(f"e{i}", 10) for i in range(4)]
    for r in reqs:
        sched.add(r)
    plan = sched.schedule()
    assert len(plan.admitted) == 4  # 4 x 10 cells fit 40; a generation would reserve 32 each
    assert sched.load().kv_cells_reserved == 40
