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
