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
        self._then_submit = then_submit

    def __call__(self, events: list[Event]) -> None:
        for event in events:
            self.events.append(event)
            if isinstance(event, Started) and self._then_submit is not None:
                engine, task = self._then_submit
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
