"""The engine's intake: requests that arrive while others are being admitted, or that the
service has begun reading (engine.Arrival), share their step."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_harness import GREEDY_ONE, Sink, running_engine

import native
from native.errors import DecodeAbortedError
from service.engine import engine as engine_module
from service.engine.engine import Arrival, Engine
from service.engine.events import Event, Finished, Started
from service.engine.params import CompletionParams, SamplingParams
from service.engine.task import Task

_PARAMS = GREEDY_ONE


@pytest.fixture
def engine(tiny_bpe_path: Path) -> Iterator[Engine]:
    with running_engine(tiny_bpe_path, n_ctx=1024, n_seq_max=4) as eng:
        yield eng


class _Recorder(Sink):
    """A sink that may submit another task when its own starts."""

    def __init__(self) -> None:
        super().__init__()
        self.then_submit: tuple[Engine, Task] | None = None

    def record(self, event: Event) -> None:
        super().record(event)
        if isinstance(event, Started) and self.then_submit is not None:
            engine, task = self.then_submit
            engine.submit(task)  # arrives while the engine is between admission and step


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
    arrival = Arrival(engine)  # the second request is being read...
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
    with Arrival(engine):  # e.g. refused as invalid before it reached the engine
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
    with Arrival(engine):  # opened once the first step has run
        assert _finished(r1)
        assert engine.stats.n_decode_total == 16


class _DecodeHook:
    """Wraps the engine context's real decode: runs `before(call number)` on the engine
    thread just before each decode, the moment a request would begin arriving mid-decode (an
    interrupt stays in force until the next decode, so before is the same as during)."""

    def __init__(self, engine: Engine, monkeypatch: pytest.MonkeyPatch,
                 before: Callable[[int], None]) -> None:
        self.calls = 0
        real = engine.ctx.decode

        def decode(batch: native.Batch, *args: Any, **kwargs: Any) -> None:
            self.calls += 1
            before(self.calls)
            real(batch, *args, **kwargs)

        monkeypatch.setattr(engine.ctx, "decode", decode)


class _LateArrival:
    """A request that begins arriving at a moment the test picks on the engine thread
    (`begin`), its task handed over later from the test's thread (`submit`)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.arrival: Arrival | None = None
        self.begun = threading.Event()

    def begin(self) -> None:
        if self.arrival is None:
            self.arrival = Arrival(self.engine)
            self.begun.set()

    def submit(self, task: Task) -> None:
        assert self.begun.wait(30)
        self.engine.submit(task, self.arrival)


def _tokens(recorder: _Recorder) -> tuple[int, ...]:
    finished = recorder.events[-1]
    assert isinstance(finished, Finished)
    return finished.tokens


def _tokens_uncached(engine: Engine, prompt: list[int], n_predict: int) -> tuple[int, ...]:
    """The greedy tokens of `prompt` decoded from scratch (no cached prefix), alone."""
    recorder = _Recorder()
    params = CompletionParams(n_predict=n_predict, cache_prompt=False,
                              sampling=SamplingParams(temperature=0.0))
    engine.submit(Task("fresh", prompt, params, recorder))
    assert _finished(recorder)
    return _tokens(recorder)


@pytest.mark.usefixtures("long_arrival_wait")
def test_a_request_arriving_during_a_bursts_first_decode_joins_it_redone(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "BURST_WINDOW_S", 60.0)
    late = _LateArrival(engine)

    def arrive_during_first(call: int) -> None:
        if call == 1:
            late.begin()

    _DecodeHook(engine, monkeypatch, arrive_during_first)
    prompt_a = [20 + i % 50 for i in range(40)]
    first, r1 = _task("a", prompt_a, n_predict=6)
    engine.submit(first)
    second, r2 = _task("b", [10, 11, 12, 13, 14], n_predict=6)
    late.submit(second)
    assert _finished(r1, r2)
    # The first decode was thrown away; the one that counted held both prompts.
    assert engine.stats.decodes_interrupted == 1
    assert engine.stats.prompt_tokens_total == 45
    assert engine.stats.n_decode_total == 6
    # Nothing of the interrupted decode stayed in the memory.
    assert _tokens(r1) == _tokens_uncached(engine, prompt_a, 6)


@pytest.mark.usefixtures("long_arrival_wait")
def test_a_request_arriving_while_the_first_batch_is_built_is_gathered_first(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # Before the decode can be interrupted, the engine looks for arrivals once more.
    monkeypatch.setattr(engine_module, "BURST_WINDOW_S", 60.0)
    late = _LateArrival(engine)
    real_add = engine.executor._batch.add_sequence

    def add_sequence(*args: Any, **kwargs: Any) -> int:
        late.begin()
        return real_add(*args, **kwargs)

    monkeypatch.setattr(engine.executor._batch, "add_sequence", add_sequence)
    first, r1 = _task("a", [20, 21, 22])
    engine.submit(first)
    second, r2 = _task("b", [10, 11, 12, 13, 14])
    late.submit(second)
    assert _finished(r1, r2)
    assert engine.stats.n_decode_total == 1 and engine.stats.prompt_tokens_total == 8
    assert engine.stats.decodes_interrupted == 0


def test_decodes_are_not_interrupted_once_a_token_is_out_or_the_window_is_over(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_module, "BURST_WINDOW_S", 60.0)
    # A request begins arriving (and ends unread) before the first decode, and before every
    # one after the first token: only the first decode is interrupted.
    def arrive(call: int) -> None:
        if call != 2:
            with Arrival(engine):
                pass

    _DecodeHook(engine, monkeypatch, arrive)
    running, r1 = _task("a", [20, 21, 22], n_predict=8)
    engine.submit(running)
    assert _finished(r1)
    assert engine.stats.decodes_interrupted == 1 and engine.stats.n_decode_total == 8

    monkeypatch.setattr(engine_module, "BURST_WINDOW_S", 0.0)
    later, r2 = _task("b", [30, 31, 32], n_predict=4)
    engine.submit(later)
    assert _finished(r2)
    assert engine.stats.decodes_interrupted == 1


def test_a_decode_interrupted_after_some_ubatches_is_redone_cleanly(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # llama.cpp keeps the ubatches an interrupted decode finished before the one it stopped
    # in. Here the first decode does that for real (the first 16 prompt tokens) and then
    # reports the interrupt; the engine must drop them and decode the whole prompt again.
    prompt = [20 + i % 50 for i in range(40)]
    task, recorder = _task("a", prompt, n_predict=6)
    real = engine.ctx.decode

    def decode(batch: native.Batch, *args: Any, **kwargs: Any) -> None:
        if engine.stats.decodes_interrupted == 0 and task.slot is not None:
            part = native.Batch(16)
            part.add_sequence(prompt[:16], 0, task.slot.id, False)
            real(part)
            raise DecodeAbortedError(2)
        real(batch, *args, **kwargs)

    monkeypatch.setattr(engine.ctx, "decode", decode)
    engine.submit(task)
    assert _finished(recorder)
    monkeypatch.setattr(engine.ctx, "decode", real)
    assert engine.stats.decodes_interrupted == 1
    assert _tokens(recorder) == _tokens_uncached(engine, prompt, 6)
