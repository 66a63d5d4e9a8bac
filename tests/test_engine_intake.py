"""The engine's intake: requests that arrive while others are being admitted, or that the
service has begun reading (engine.Arrival), share their step."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import native
from native.context import ContextParams
from service.engine import engine as engine_module
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

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.done = threading.Event()
        self.then_submit: tuple[Engine, Task] | None = None

    def __call__(self, events: list[Event]) -> None:
        for event in events:
            self.events.append(event)
            if isinstance(event, Started) and self.then_submit is not None:
                engine, task = self.then_submit
                engine.submit(task)  # arrives while the engine is between admission and step
            if isinstance(event, Finished | Failed):
                self.done.set()


def _run_chain(engine: Engine, prompts: list[list[int]]) -> list[_Recorder]:
    """Submit the first prompt; each request's Started event submits the next one, so that
    every request arrives while the one before it is being admitted."""
    recorders = [_Recorder() for _ in prompts]
    tasks = [Task(f"t{i}", prompt, _PARAMS, recorder)
             for i, (prompt, recorder) in enumerate(zip(prompts, recorders, strict=True))]
    for recorder, following in zip(recorders[:-1], tasks[1:], strict=True):
        recorder.then_submit = (engine, following)
    engine.submit(tasks[0])
    assert all(r.done.wait(30) for r in recorders)
    assert all(isinstance(r.events[-1], Finished) for r in recorders)
    return recorders


def test_a_request_arriving_during_admission_is_prefilled_in_the_same_step(
        engine: Engine) -> None:
    recorders = _run_chain(engine, [[20, 21, 22], [10, 11, 12, 13, 14]])
    # One decode held both prompts (8 tokens) and gave each its one token.
    assert engine.stats.n_decode_total == 1
    assert engine.stats.prompt_tokens_total == 8
    assert [len(e.tokens) for r in recorders for e in r.events[-1:]
            if isinstance(e, Finished)] == [1, 1]


def test_a_burst_arriving_during_admissions_shares_one_step(engine: Engine) -> None:
    _run_chain(engine, [[20, 21, 22], [10, 11, 12, 13, 14], [30, 31]])
    assert engine.stats.n_decode_total == 1
    assert engine.stats.prompt_tokens_total == 10


def test_requests_beyond_the_free_slots_wait_for_a_later_step(engine: Engine) -> None:
    # Four slots: a chain of six arrivals fills them in the first step; the rest queue.
    _run_chain(engine, [[40 + i, 50 + i] for i in range(6)])
    assert engine.stats.n_decode_total == 2  # four prompts, then the two that waited
    assert engine.stats.prompt_tokens_total == 12


def _task(name: str, prompt: list[int], n_predict: int = 1) -> tuple[Task, _Recorder]:
    recorder = _Recorder()
    params = CompletionParams(n_predict=n_predict, sampling=SamplingParams(temperature=0.0))
    return Task(name, prompt, params, recorder), recorder


def _finished(*recorders: _Recorder) -> bool:
    return all(r.done.wait(30) and isinstance(r.events[-1], Finished) for r in recorders)


@pytest.fixture
def long_arrival_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    # Long enough that nothing here depends on timing: only an arrival's end releases it.
    monkeypatch.setattr(engine_module, "ARRIVAL_WAIT_S", 60.0)


@pytest.mark.usefixtures("long_arrival_wait")
def test_an_idle_engine_waits_for_a_request_still_being_read(engine: Engine) -> None:
    arrival = engine.arrival()  # the second request is being read...
    first, r1 = _task("a", [20, 21, 22])
    engine.submit(first)
    time.sleep(0.3)  # ...while the engine has admitted the first one, and waits
    assert engine.stats.n_decode_total == 0 and not r1.done.is_set()
    second, r2 = _task("b", [10, 11, 12, 13, 14])
    engine.submit(second, arrival)
    assert _finished(r1, r2)
    assert engine.stats.n_decode_total == 1 and engine.stats.prompt_tokens_total == 8


@pytest.mark.usefixtures("long_arrival_wait")
def test_a_request_that_ends_unread_releases_the_engine(engine: Engine) -> None:
    with engine.arrival():  # e.g. refused as invalid before it reached the engine
        first, r1 = _task("a", [20, 21, 22])
        engine.submit(first)
        time.sleep(0.3)
        assert not r1.done.is_set()
    assert _finished(r1)
    assert engine.stats.n_decode_total == 1


@pytest.mark.usefixtures("long_arrival_wait")
def test_a_busy_engine_does_not_wait_for_arrivals(engine: Engine) -> None:
    # Waiting would hold up the streams already generating: a later request joins a later
    # step instead.
    running, r1 = _task("a", [20, 21, 22], n_predict=16)
    engine.submit(running)
    deadline = time.monotonic() + 30
    while engine.stats.n_decode_total == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    with engine.arrival():  # opened once the first step has run
        assert _finished(r1)
        assert engine.stats.n_decode_total == 16
