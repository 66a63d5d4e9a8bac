"""--max-queue counts requests, not the engine inbox's other items: a call (GetLoad's, which load
balancers poll) or a wake-up waiting in the inbox made a request that fit be refused with
RESOURCE_EXHAUSTED (seen as a flaky "B waits" in tests/test_rich_errors.py and
tests/test_admission.py while GetLoad was polled)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from engine_harness import GREEDY_ONE, Sink, running_engine

from service.engine.engine import Engine, EngineSettings, QueueFullError
from service.engine.events import Finished
from service.engine.task import Task

pytestmark = pytest.mark.slow
_PARAMS = GREEDY_ONE


@pytest.fixture
def engine(tiny_bpe_path: Path) -> Iterator[Engine]:
    with running_engine(tiny_bpe_path, n_ctx=512, n_seq_max=1,
                        settings=EngineSettings(max_queue=1)) as eng:
        yield eng


def test_calls_and_wake_ups_in_the_inbox_do_not_fill_the_queue(engine: Engine) -> None:
    running, release = threading.Event(), threading.Event()

    def block() -> None:
        running.set()
        release.wait(30)

    blocked = engine.call(block)
    assert running.wait(30)  # the engine thread is in `block`: its inbox is empty
    polled = engine.call(lambda: None)  # waits in the inbox, as a GetLoad does
    engine.cancel(Task("gone", [1, 2], _PARAMS, Sink()))  # a wake-up in the inbox
    sink = Sink()
    try:
        engine.submit(Task("fits", [1, 2, 3], _PARAMS, sink))  # nothing waits: accepted
        with pytest.raises(QueueFullError):  # the one request in the inbox does count
            engine.submit(Task("one too many", [1, 2, 3], _PARAMS, Sink()))
    finally:
        release.set()
    blocked.result(30)
    polled.result(30)
    assert sink.done.wait(30)
    assert isinstance(sink.events[-1], Finished)
