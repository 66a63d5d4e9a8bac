"""Running generations from asyncio: submit tasks to the engine, iterate their events.

The engine calls each task's sink on its own thread; the sink hands the events to this request's
asyncio queue with one call_soon_threadsafe. If the consumer goes away (client cancel or
disconnect), every task still running is cancelled in the engine at once.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

from service.engine.engine import Arrival, Engine
from service.engine.events import Event, Failed, Finished
from service.engine.params import CompletionParams
from service.engine.task import Task


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
    """A request's generations (one per prompt), known by the request id for Cancel."""

    id: str
    tasks: list[Task] = field(default_factory=list)


class GenerationRegistry:
    def __init__(self) -> None:
        self._running: dict[str, Generation] = {}

    def add(self, gen: Generation) -> None:
        self._running[gen.id] = gen

    def remove(self, gen: Generation) -> None:
        self._running.pop(gen.id, None)

    def get(self, gen_id: str) -> Generation | None:
        return self._running.get(gen_id)


async def run_generation(engine: Engine, registry: GenerationRegistry, request_id: str,
                         prompts: Sequence[list[int]], params: CompletionParams,
                         arrival: Arrival | None = None) -> AsyncIterator[tuple[int, Event]]:
    """Yield (prompt index, event) for every prompt's generation until all have ended.
    `arrival`, the request's, goes with its last task (engine.Arrival)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[int, list[Event]]] = asyncio.Queue()
    gen = Generation(request_id)

    for i, prompt in enumerate(prompts):
        task_id = request_id if len(prompts) == 1 else f"{request_id}-{i}"
        gen.tasks.append(Task(task_id, prompt, params, QueueSink(loop, queue, i)))
    registry.add(gen)
    for i, task in enumerate(gen.tasks):
        engine.submit(task, arrival if i == len(gen.tasks) - 1 else None)
    ended: set[int] = set()
    try:
        while len(ended) < len(gen.tasks):
            index, events = await queue.get()
            for event in events:
                if isinstance(event, Finished | Failed):
                    ended.add(index)
                yield index, event
    finally:
        registry.remove(gen)
        for i, task in enumerate(gen.tasks):
            if i not in ended:
                engine.cancel(task.id)


def cancel_generation(engine: Engine, registry: GenerationRegistry, gen_id: str) -> bool:
    gen = registry.get(gen_id)
    if gen is None:
        return False
    return any([engine.cancel(t.id) for t in gen.tasks])
