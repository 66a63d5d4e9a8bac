"""Events handed to an asyncio loop through its pipe (service/engine/waker.py): queued until a
decode (or wake_all) wakes the loop, delivered in order, and never left waiting."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from engine_harness import running_engine

from service.engine.engine import Engine
from service.engine.events import Chunk, Event, Finished, Started
from service.engine.params import CompletionParams, SamplingParams
from service.engine.task import Task
from service.engine.waker import Wakers
from service.generation import QueueSink


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running on its own thread, as the service's is beside the engine."""
    lp = asyncio.new_event_loop()
    thread = threading.Thread(target=lp.run_forever, daemon=True)
    thread.start()
    yield lp
    lp.call_soon_threadsafe(lp.stop)
    thread.join(10)
    lp.close()


def _settle(lp: asyncio.AbstractEventLoop) -> None:
    """Wait until the loop has run what was queued to it before this call."""
    asyncio.run_coroutine_threadsafe(asyncio.sleep(0), lp).result(10)


def test_batches_wait_for_the_wake_up_and_come_in_order(loop: asyncio.AbstractEventLoop
                                                        ) -> None:
    got: list[Any] = []
    delivered = threading.Event()

    def deliver(items: list[Any]) -> None:
        got.extend(items)
        delivered.set()

    wakers = Wakers(deliver)
    wakers.post(loop, [1])  # before the loop's reader is in place: call_soon_threadsafe
    _settle(loop)
    assert got == [1]
    wakers.post(loop, [2])
    wakers.post(loop, [3])
    _settle(loop)
    assert got == [1], "a queued batch reached the loop before any wake-up"
    waker = wakers.take()
    assert waker is not None and wakers.take() is None  # taken once
    delivered.clear()
    os.write(waker.write_fd, b"\0")  # what the decode writes from C
    assert delivered.wait(10)
    _settle(loop)
    assert got == [1, 2, 3]
    delivered.clear()
    wakers.post(loop, [4])
    wakers.wake_all()  # no decode is coming: written from Python
    assert delivered.wait(10)
    _settle(loop)
    assert got == [1, 2, 3, 4]
    wakers.close()


def test_a_closed_loop_gets_nothing_and_its_pipe_is_closed() -> None:
    lp = asyncio.new_event_loop()
    wakers = Wakers(lambda items: None)
    wakers.post(lp, [1])  # the waker is made (its reader not in place: the loop never ran)
    lp.close()
    wakers.post(lp, [2])  # dropped, not raised
    assert wakers.take() is None
    wakers.close()


@pytest.fixture(scope="module")
def engine(tiny_bpe_path: Path) -> Iterator[Engine]:
    with running_engine(tiny_bpe_path, n_ctx=1024, n_seq_max=2) as eng:
        yield eng


async def _generate(engine: Engine, n_predict: int, first: int) -> list[Event]:
    queue: asyncio.Queue[tuple[int, list[Event]]] = asyncio.Queue()
    params = CompletionParams(n_predict=n_predict, ignore_eos=True,
                              sampling=SamplingParams(temperature=0.0))
    sink = QueueSink(asyncio.get_running_loop(), queue, 0)
    engine.submit(Task("w", [first + j for j in range(8)], params, sink))
    events: list[Event] = []
    while not events or not isinstance(events[-1], Finished):
        _, batch = await asyncio.wait_for(queue.get(), 60)
        events.extend(batch)
    return events


@pytest.mark.slow
def test_generations_on_a_loop_get_every_event_in_order(engine: Engine) -> None:
    """Through the engine: the last token's events and the Finished event (no decode follows
    them) still reach the loop, and so do two streams' events sharing decodes."""
    async def main() -> list[list[Event]]:
        return list(await asyncio.gather(_generate(engine, 24, 100), _generate(engine, 7, 300)))

    for events, n in zip(asyncio.run(main()), (24, 7), strict=True):
        assert isinstance(events[0], Started)
        tokens = [t for e in events if isinstance(e, Chunk) for t in e.tokens]
        final = events[-1]
        assert isinstance(final, Finished)
        assert len(final.tokens) == n
        assert tuple(tokens) == final.tokens[:len(tokens)]
    # The engine idles with nothing queued: a later request on a new loop is served too.
    again = asyncio.run(_generate(engine, 3, 500))
    assert isinstance(again[-1], Finished) and len(again[-1].tokens) == 3
