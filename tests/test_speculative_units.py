"""Speculative decoding's pure logic (no model): the scheduler's 1 + k token plans, draft room,
n-gram lookup, --spec-type, and the request's speculative.* fields."""

from __future__ import annotations

import pytest
from google.protobuf import json_format
from llama.v1 import completion_pb2

from service.engine.params import ParamError
from service.engine.scheduler import SeqRequest
from service.engine.speculative import (
    NgramSettings,
    SpecParams,
    draft_room,
    ngram_draft,
    parse_types,
    spec_params_of,
)
from tests.scheduler_harness import Runner, make_scheduler, only_work, request


def _generating(n_slots: int = 2, n_batch: int = 64,
                n_reqs: int = 0) -> tuple[Runner, list[SeqRequest]]:
    run = Runner(make_scheduler(n_slots, n_batch=n_batch, n_ctx_seq=128))
    reqs = [request(f"r{i}", 4) for i in range(n_reqs or n_slots)]
    run.add(*reqs)
    run.run_until(lambda: all(r.generating for r in reqs))  # prompts decoded, tokens sampled
    return run, reqs


def test_a_draft_is_planned_after_the_last_token_with_logits_on_every_position() -> None:
    run, (a, b) = _generating()
    a.draft = (7, 8, 9)
    plan = run.sched.schedule()
    wa, wb = only_work(plan, a), only_work(plan, b)
    assert wa.tokens == (a.last_token, 7, 8, 9) and wa.n_outputs == 4 and wa.pos == a.n_past
    assert wb.tokens == (b.last_token,) and wb.n_outputs == 1
    assert [w.seq_id for w in plan.work] == sorted(w.seq_id for w in plan.work)


def test_drafts_share_a_decode_with_prompt_chunks() -> None:
    run, (a, _b) = _generating(3, n_reqs=2)
    late = request("late", 20)
    run.add(late)
    a.draft = (1, 2)
    plan = run.sched.schedule()
    assert only_work(plan, a).tokens[1:] == (1, 2)
    assert len(only_work(plan, late).tokens) == 20


def test_drafts_never_push_another_sequence_s_token_out_of_the_batch() -> None:
    run, reqs = _generating(4, n_batch=8)
    for r in reqs:
        r.draft = (1, 2, 3, 4)
    plan = run.sched.schedule()
    assert plan.n_tokens == 8
    assert all(len(only_work(plan, r).tokens) >= 1 for r in reqs)  # every one has its token


def test_rollback_drops_rejected_cells() -> None:
    run, (a, _b) = _generating()
    a.draft = (5, 6, 7)
    plan = run.sched.schedule()
    run.sched.advance(plan)
    n0 = a.n_past - 4
    assert a.slot is not None and a.slot.cache_tokens[-3:] == [5, 6, 7]
    run.sched.rollback(a, n0 + 2)  # the last token and one draft token kept
    assert a.n_past == n0 + 2 and a.slot.cache_tokens[-1] == 5


class _Task:
    def __init__(self, n_past: int, n_predict: int, generated: int) -> None:
        self.n_past, self.n_predict, self.generated = n_past, n_predict, [0] * generated


@pytest.mark.parametrize(("n_past", "n_predict", "generated", "n_max", "room"), [
    (10, -1, 1, 16, 16),
    (90, -1, 1, 16, 100 - 90 - 3),  # the slot's last cells stay out of reach
    (99, -1, 1, 16, 0),
    (10, 8, 3, 16, 4),  # the request's n_predict: at most 5 more tokens, 1 + 4 a step
    (10, 8, 8, 16, 0),
    (10, -1, 1, 0, 0),
])
def test_draft_room(n_past: int, n_predict: int, generated: int, n_max: int, room: int) -> None:
    assert draft_room(_Task(n_past, n_predict, generated), 100, n_max) == room


def test_ngram_lookup_proposes_what_followed_the_last_n_tokens() -> None:
    s = NgramSettings(size_n=2, size_m=3)
    history = [0, 1, 2, 3, 4, 5, 9, 9, 9, 1, 2]  # (position 0 is never a match: as llama.cpp)
    assert ngram_draft(history, s, 16) == [3, 4, 5]
    assert ngram_draft(history, s, 2) == [3, 4]
    assert ngram_draft([0, 1, 2, 3, 4, 5, 6, 7, 8, 1, 3], s, 16) == []  # no earlier [1, 3]
    assert ngram_draft([1, 2, 3, 1, 2], s, 16) == []  # too short a history
    assert ngram_draft(history, s, 0) == []


def test_spec_types() -> None:
    assert parse_types("ngram-simple") == ("ngram-simple",)
    assert parse_types("draft-simple,ngram-simple") == ("draft-simple", "ngram-simple")
    assert parse_types("none") == ()
    with pytest.raises(ValueError, match="ngram-mod is not supported"):
        parse_types("ngram-mod")
    with pytest.raises(ValueError, match="unknown speculative type: nope"):
        parse_types("nope")


def _req(**fields: object) -> completion_pb2.CompletionRequest:
    return json_format.ParseDict({"prompt": "x", **fields}, completion_pb2.CompletionRequest())


def test_request_fields_over_the_server_s() -> None:
    server = SpecParams(n_max=3, n_min=0, p_min=0.0, types="draft-simple")
    assert spec_params_of(_req(), server) == server
    got = spec_params_of(_req(**{"speculative.n_max": 8, "speculative.n_min": 2,
                                 "speculative.p_min": 0.5}), server)
    assert (got.n_max, got.n_min, got.p_min, got.cap) == (8, 2, 0.5, 8)
    assert spec_params_of(_req(**{"speculative.n_max": 2, "speculative.n_min": 5}),
                          server).n_min == 2  # n_min is at most n_max, as llama-server's


@pytest.mark.parametrize(("field", "value"), [
    ("speculative.n_max", -1), ("speculative.n_min", -2), ("speculative.p_min", 1.5),
    ("speculative.p_min", -0.1)])
def test_request_fields_out_of_range_are_refused(field: str, value: float) -> None:
    with pytest.raises(ParamError, match=field.replace(".", r"\.")):
        spec_params_of(_req(**{field: value}), SpecParams())


def test_the_drafts_best_token_is_top_logits_pick() -> None:
    """best_token's argmax (p_min 0) picks what the softmax path picks, ties to the lower id."""
    import math
    import random

    from native._ffi import ffi
    from native.context import _floats
    from native.sampler import top_logits
    from service.engine.speculative_draft import best_token

    rng = random.Random(7)
    rows = [[rng.gauss(0, 3) for _ in range(5000)] for _ in range(5)]
    rows.append([1.0, 3.0, 2.0, 3.0])  # a tie: the lower id
    for values in rows:
        buf = ffi.new("float[]", values)
        logits = _floats(buf, len(values))
        ids, lse = top_logits(logits, 1)
        assert best_token(logits, 0.0) == (ids[0], 1.0)
        token, p = best_token(logits, 0.5)
        assert token == ids[0] and p == math.exp(float(logits[ids[0]]) - lse)
    assert best_token(_floats(ffi.new("float[]", [1.0, 3.0, 2.0, 3.0]), 4), 0.0)[0] == 1
