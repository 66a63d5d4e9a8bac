"""A step's events, gathered per consumer and handed over together (engine thread only).

Sinks on an asyncio event loop (LoopSink) get a step's events in one batch per loop, which the
next decode wakes the loop for, or `wake_all` when no decode follows (waker.py says why); other
sinks are called directly."""

from __future__ import annotations

import logging
from typing import Any, cast

from service.engine.events import Event
from service.engine.task import EventSink, LoopSink
from service.engine.waker import LoopWaker, Wakers

_log = logging.getLogger(__name__)


class Outbox:
    def __init__(self) -> None:
        self._events: dict[EventSink, list[Event]] = {}
        self._wakers = Wakers(_deliver_on_loop)

    def __bool__(self) -> bool:
        """Whether events wait to be delivered."""
        return bool(self._events)

    def emit(self, sink: EventSink, event: Event) -> None:
        events = self._events.get(sink)  # (setdefault would build a list every call)
        if events is None:
            self._events[sink] = [event]
        else:
            events.append(event)

    def deliver(self) -> None:
        """Hand this step's events over: to loop sinks' loops (woken later), to others now."""
        events_by_sink, self._events = self._events, {}
        by_loop: dict[Any, list[tuple[LoopSink, list[Event]]]] = {}
        for sink, events in events_by_sink.items():
            transform = getattr(sink, "transform", None)  # a chat answer's parser (chat_sink)
            if transform is not None:
                events = transform(events)
            # Not isinstance(sink, LoopSink): a runtime protocol check costs ~15 us a call.
            if hasattr(sink, "deliver_local"):
                loop_sink = cast(LoopSink, sink)
                by_loop.setdefault(loop_sink.loop, []).append((loop_sink, events))
                continue
            try:
                sink(events)
            except Exception:  # a consumer that went away must not stop the engine
                _log.debug("dropping events for a closed stream", exc_info=True)
        for loop, items in by_loop.items():
            try:
                self._wakers.post(loop, items)
            except RuntimeError:  # the loop is closed: its consumers are gone
                _log.debug("dropping events for a closed event loop")

    def take_waker(self) -> LoopWaker | None:
        """A loop with delivered events to wake, for the next decode to wake from C."""
        return self._wakers.take()

    def wake_all(self) -> None:
        """Wake every loop with delivered events now (no decode follows to do it)."""
        self._wakers.wake_all()

    def close(self) -> None:
        self._wakers.close()


def _deliver_on_loop(items: list[tuple[LoopSink, list[Event]]]) -> None:
    for sink, events in items:
        sink.deliver_local(events)
