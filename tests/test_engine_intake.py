"""The engine's intake: requests that arrive while others are being admitted share their step."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import native
from native.context import ContextParams
from service.engine.engine import Engine
from service.engine.events import Event, Failed, Finished, Started
from service.engine.params import CompletionParams, SamplingParams
from service.engine.task import Task

_PARAMS = CompletionParams(n_predict=1, sampling=SamplingParams(temperature=0.0))


@pytest.fixture
def engine(tiny_bpe_path: Path) -> Iterator[Engine]:
    model = native.Model(tiny_bpe_path)
    ctx = native.Context(model, ContextParams(n_ctx=1024, n_seq_max=4, n_threads=1,
                                              n_threads_batch=1))
    eng = Engine(model, ctx)
    eng.start()
    try:
        yield eng
    finally:
        eng.stop()
        ctx.close()
        model.close()


class _Recorder:
    """A sink called on the engine thread; may submit another task when its own starts."""

    def __init__(self, then_submit: tuple[Engine, Task] | None = None) -> None:
        self.events: list[Event] = []
        self.done = threading.Event()
        self.then_submit = then_submit

    def __call__(self, events: list[Event]) -> None:
        for event in events:
            self.events.append(event)
            if isinstance(event, Started) and self.then_submit is not None:
                engine, task = self.then_submit
                engine.submit(task)  # arrives while the engine is between admission and step
            if isinstance(event, Finished | Failed):
                self.done.set()


def test_a_request_arriving_during_admission_is_prefilled_in_the_same_step(
        engine: Engine) -> None:
    second = _Recorder()
    b = Task("b", [10, 11, 12, 13, 14], _PARAMS, second)
    first = _Recorder(then_submit=(engine, b))
    engine.submit(Task("a", [20, 21, 22], _PARAMS, first))
    assert first.done.wait(30) and second.done.wait(30)
    assert isinstance(first.events[-1], Finished) and isinstance(second.events[-1], Finished)
    # One decode held both prompts (8 tokens) and gave each its one token.
    assert engine.stats.n_decode_total == 1
    assert engine.stats.prompt_tokens_total == 8
    assert [len(e.tokens) for e in (first.events[-1], second.events[-1])
            if isinstance(e, Finished)] == [1, 1]


def test_a_burst_arriving_during_admissions_shares_one_step(engine: Engine) -> None:
    # Each request arrives while the one before it is being admitted: all three, one decode.
    third = _Recorder()
    c = Task("c", [30, 31], _PARAMS, third)
    second = _Recorder(then_submit=(engine, c))
    b = Task("b", [10, 11, 12, 13, 14], _PARAMS, second)
    first = _Recorder(then_submit=(engine, b))
    engine.submit(Task("a", [20, 21, 22], _PARAMS, first))
    assert all(r.done.wait(30) for r in (first, second, third))
    assert all(isinstance(r.events[-1], Finished) for r in (first, second, third))
    assert engine.stats.n_decode_total == 1
    assert engine.stats.prompt_tokens_total == 10


def test_requests_beyond_the_free_slots_wait_for_a_later_step(engine: Engine) -> None:
    # Four slots: a chain of six arrivals fills them in the first step; the rest queue.
    recorders = [_Recorder() for _ in range(6)]
    tasks = [Task(f"t{i}", [40 + i, 50 + i], _PARAMS, r) for i, r in enumerate(recorders)]
    for i in range(5):
        recorders[i].then_submit = (engine, tasks[i + 1])
    engine.submit(tasks[0])
    assert all(r.done.wait(30) for r in recorders)
    assert all(isinstance(r.events[-1], Finished) for r in recorders)
    assert engine.stats.n_decode_total == 2  # four prompts, then the two that waited
    assert engine.stats.prompt_tokens_total == 12
