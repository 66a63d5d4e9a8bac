"""The scheduler's side of LoRA adapters and cache reuse, as pure logic (no model): a plan
names the adapter set its decode runs with (the executor sets it on the context), a slot's
cache is reused only by a request with the set it was made with, and an admission carries
the KV-shift moves of n_cache_reuse."""

from __future__ import annotations

from dataclasses import replace

from scheduler_harness import Runner, make_scheduler, request

LORA = ((0, 1.0),)
HALF = ((0, 0.5),)


def test_a_plan_names_the_set_of_its_work() -> None:
    run = Runner(make_scheduler(2))
    a, b = request("a", 4, n_predict=2, adapters=LORA), request("b", 4, n_predict=2)
    run.add(a, b)
    plans = run.run_until(lambda: len(run.finished) == 2)
    for p in plans:
        if p.work:
            assert {w.request.adapters for w in p.work} == {p.adapters}
    assert plans[0].adapters == LORA  # the oldest request's set first
    assert () in {p.adapters for p in plans}


def _cached_slot(adapters: tuple[tuple[int, float], ...]) -> tuple[Runner, list[int]]:
    run = Runner(make_scheduler(1))
    first = request("first", 12, n_predict=2, adapters=adapters)
    run.add(first)
    run.run_until(lambda: first in run.finished)
    assert run.sched.slots[0].adapters == adapters
    return run, list(first.prompt)


def test_a_slot_cache_is_reused_only_with_the_same_adapters() -> None:
    run, prompt = _cached_slot(LORA)
    same = request("same", [*prompt, 5], n_predict=1, adapters=LORA)
    run.add(same)
    adm = run.step().admitted[0]
    assert adm.n_reuse == len(prompt) and same.n_cached == len(prompt)

    run, prompt = _cached_slot(LORA)
    other = request("other", [*prompt, 5], n_predict=1, adapters=HALF)
    run.add(other)
    adm = run.step().admitted[0]
    assert adm.n_reuse == 0 and other.n_cached == 0
    assert run.sched.slots[0].adapters == HALF


def test_an_admission_carries_the_cache_reuse_moves() -> None:
    sched = make_scheduler(1, n_ctx_seq=256)
    sched = replace(sched, limits=replace(sched.limits, can_shift=True))
    run = Runner(sched)
    head, middle, tail = list(range(1, 11)), list(range(100, 120)), list(range(200, 240))
    first = request("first", [*head, *middle, *tail], n_predict=1)
    run.add(first)
    run.run_until(lambda: first in run.finished)
    second = request("second", [*head, *tail, 7], n_predict=1)
    second.n_cache_reuse = 8
    run.add(second)
    adm = run.step().admitted[0]
    assert adm.shifts == ((10, 30, 40),) and adm.n_reuse == 50 == second.n_cached
    assert run.sched.slots[0].cache_tokens[:50] == [*head, *tail]


def test_a_start_up_scale_and_a_request_scale_of_the_same_value_are_one_set() -> None:
    from llama.v1 import common_pb2

    from service.lora import adapter_set, checked_scales

    request_scale = common_pb2.LoraScale(id=0, scale=0.1)  # a float32 on the wire
    assert request_scale.scale != 0.1
    assert adapter_set({0: 0.1}) == adapter_set(checked_scales([request_scale], 1, "lora"))
