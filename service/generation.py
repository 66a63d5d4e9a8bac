"""Running generations from asyncio: submit a request's tasks to the engine, iterate their events.

The engine hands each task's events to its sink's loop (deliver_local, run on the loop:
engine/waker.py; called directly, the sink uses call_soon_threadsafe), into this request's
asyncio queue. If the consumer goes away (client cancel or disconnect), every task still
running is cancelled in the engine at once. A request is known by its id (for Cancel) before
its tasks are submitted, so a cancel can never miss a queued one.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from service.engine.arrival import Arrival
from service.engine.engine import Engine
from service.engine.events import Embedded, Event, Failed, Finished
from service.engine.task import Task
from service.errors import ServiceError


class QueueSink:
    """Delivers a task's events into the request's asyncio queue (see engine.LoopSink)."""

    __slots__ = ("index", "loop", "queue")

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 queue: asyncio.Queue[tuple[int, list[Event]]], index: int) -> None:
        self.loop, self.queue, self.index = loop, queue, index

    def __call__(self, events: list[Event]) -> None:
        self.loop.call_soon_threadsafe(self.deliver_local, events)

    def deliver_local(self, events: list[Event]) -> None:
        self.queue.put_nowait((self.index, events))


def new_request_id(prefix: str = "cmpl") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


@dataclass
class Generation:
    """A request's generations (one task per prompt) and the queue their events come to.
    Make it on the event loop; its sinks may be handed to tasks built on another thread."""

    id: str
    loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.get_running_loop)
    queue: asyncio.Queue[tuple[int, list[Event]]] = field(default_factory=asyncio.Queue)
    tasks: list[Task] = field(default_factory=list)
    ended: set[int] = field(default_factory=set)  # prompts whose task has ended
    submitted: int = 0

    def sink(self, index: int) -> QueueSink:
        return QueueSink(self.loop, self.queue, index)

    @property
    def done(self) -> bool:
        return len(self.ended) >= len(self.tasks)

    async def next_events(self) -> tuple[int, list[Event]]:
        """The next events of one of the tasks (one engine step's)."""
        index, events = await self.queue.get()
        if isinstance(events[-1], Finished | Failed | Embedded):  # a task's last event
            self.ended.add(index)
        return index, events


class GenerationRegistry:
    def __init__(self) -> None:
        self._running: dict[str, Generation] = {}

    def add(self, gen: Generation) -> None:
        if gen.id in self._running:
            raise ServiceError("already_exists", f"a request with id {gen.id!r} is already "
                               "running; request ids must be unique among running requests",
                               metadata={"request_id": gen.id})
        self._running[gen.id] = gen

    def remove(self, gen: Generation) -> None:
        self._running.pop(gen.id, None)

    def get(self, gen_id: str) -> Generation | None:
        return self._running.get(gen_id)


@contextmanager
def running(engine: Engine, registry: GenerationRegistry, gen: Generation,
            arrival: Arrival | None = None) -> Iterator[Generation]:
    """Register gen, submit its tasks (`arrival`, the request's, goes with the last one:
    engine.arrival), and on leaving, however it is left (the consumer went away, an error),
    cancel the tasks still running and free the chains of those never submitted."""
    registry.add(gen)  # first: a duplicate id leaves nothing to undo
    try:
        for i, task in enumerate(gen.tasks):
            engine.submit(task, arrival if i == len(gen.tasks) - 1 else None)
            gen.submitted += 1
        yield gen
    finally:
        registry.remove(gen)
        for i, task in enumerate(gen.tasks):
            if i not in gen.ended:
                engine.cancel(task)
        for task in gen.tasks[gen.submitted:]:  # never reached the engine, which frees chains
            task.release_chain()


def cancel_generation(engine: Engine, registry: GenerationRegistry, gen_id: str) -> bool:
    """Cancel a request's generations by its id; whether it was still running."""
    gen = registry.get(gen_id)
    if gen is None:
        return False
    for task in gen.tasks:
        engine.cancel(task)
    return True
