"""Media in the scheduler (issue 23), as pure logic: a medium's placeholder ids
(service/engine/media.py) go whole into Plan.media, never into a token batch; text before and
after it is chunked as usual; a cached prefix is reused up to the first different medium and
never ends inside one."""

from __future__ import annotations

import hashlib

from scheduler_harness import fresh, make_scheduler, request

from service.engine.media import MediaSpan, media_ids, span_at, text_run, whole_prefix
from service.engine.scheduler import Plan, Scheduler, SeqRequest


def _ids(data: bytes, n: int) -> list[int]:
    return media_ids(hashlib.sha256(data).digest(), n)


def _with_media(rid: str, head: list[int], medium: bytes, n_media: int, tail: list[int],
                n_predict: int = -1) -> SeqRequest:
    r = request(rid, [*head, *_ids(medium, n_media), *tail], n_predict=n_predict)
    r.media = (MediaSpan(len(head), n_media, embd=None),)
    return r


def _step(sched: Scheduler) -> Plan:
    """One engine step: the media first, then the token batch, both succeeded."""
    plan = sched.schedule()
    for w in plan.media:
        sched.advance_media(w)
    sched.advance(plan)
    for w in plan.work:
        if w.n_outputs and not w.request.generating:
            w.request.generating, w.request.last_token = True, 7
    return plan


def test_media_ids_are_negative_int32_equal_for_equal_media_and_differ_otherwise() -> None:
    a, a2, b = _ids(b"image a", 16), _ids(b"image a", 16), _ids(b"image b", 16)
    assert a == a2 and a != b
    assert all(-(1 << 31) <= t < 0 for t in a + b)
    assert not set(a) & set(b)
    assert len(set(a)) == 16


def test_span_helpers() -> None:
    spans = (MediaSpan(3, 4, None), MediaSpan(10, 2, None))
    assert span_at(spans, 3) is spans[0] and span_at(spans, 4) is None
    assert text_run(spans, 0, 8) == 3
    assert text_run(spans, 7, 8) == 3
    assert text_run(spans, 12, 5) == 5
    assert [whole_prefix(spans, n) for n in (3, 4, 6, 7, 11, 12)] == [3, 3, 3, 7, 10, 12]


def test_a_medium_goes_whole_into_plan_media_between_its_text_chunks() -> None:
    sched = make_scheduler(1, n_batch=8)
    head, tail = fresh(5), fresh(3)
    r = _with_media("r", head, b"img", 12, tail, n_predict=2)
    sched.add(r)

    p1 = _step(sched)
    assert [(w.pos, list(w.tokens)) for w in p1.work] == [(0, head)]
    assert not p1.media
    p2 = _step(sched)
    assert not p2.work  # the medium used up the budget: nothing else this step
    assert [(w.pos, len(w.tokens), w.n_outputs) for w in p2.media] == [(5, 12, 0)]
    assert list(p2.media[0].tokens) == _ids(b"img", 12)
    p3 = _step(sched)
    assert [(w.pos, list(w.tokens), w.n_outputs) for w in p3.work] == [(17, tail, 1)]
    assert r.n_past == 20 and r.generating
    assert sched.slots[0].cache_tokens == list(r.prompt)


def _cached_after(first: SeqRequest, second: SeqRequest) -> int:
    sched = make_scheduler(1, n_batch=64)
    sched.add(first)
    while not first.generating:
        _step(sched)
    sched.finish(first)
    sched.add(second)
    sched.schedule()
    return second.n_cached


def test_the_cache_is_reused_across_the_same_medium_and_stops_at_a_different_one() -> None:
    head, tail = fresh(4), fresh(3)
    same = _cached_after(_with_media("a", head, b"cat", 10, tail),
                         _with_media("b", head, b"cat", 10, [*tail, 99]))
    assert same == 4 + 10 + 3
    other = _cached_after(_with_media("a", head, b"cat", 10, tail),
                          _with_media("b", head, b"dog", 10, tail))
    assert other == 4


def test_a_cached_prefix_never_ends_inside_a_medium() -> None:
    sched = make_scheduler(1, n_batch=64)
    head = fresh(4)
    r = _with_media("r", head, b"cat", 10, fresh(3))
    sched.slots[0].cache_tokens = list(r.prompt[:9])  # half a medium's cells: not reusable
    sched.add(r)
    plan = sched.schedule()
    assert r.n_cached == 4 and plan.admitted[0].n_reuse == 4
    assert sched.slots[0].cache_tokens == head
