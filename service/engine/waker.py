"""Handing a step's events to asyncio event loops without making the engine thread wait.

`loop.call_soon_threadsafe` wakes a loop by writing to its self-pipe, and the write gives up
the GIL: the loop thread, woken by it, takes the GIL and turns the events into messages (~0.1
ms a token for a gRPC stream) while the engine thread waits to take it back. Measured on one
stream of the tiny model (2 shared cores): 350 us a token in `Engine._deliver` (now
`Outbox.deliver`, outbox.py), 13 us of it CPU.

Here each loop gets a pipe of ours, read by the loop (`add_reader`). The engine queues a step's
events for the loop and leaves the wake-up for the next decode, which writes the byte from C
with the GIL already released (`Context.decode(wake_fd=...)`, native/_cffi_src/interrupt.c): the
loop then works while the engine decodes. A step that decodes nothing, and the engine before it
waits for work, wake the loops at once (`wake_all`). Loops without `add_reader`, and a loop
until its reader is set up, get `call_soon_threadsafe` as before.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import deque
from collections.abc import Callable
from typing import Any

_log = logging.getLogger(__name__)

Items = list[Any]  # (sink, events) pairs for one loop, delivered by `deliver` on that loop


class LoopWaker:
    """One event loop's pipe and the event batches waiting for it to read them."""

    def __init__(self, loop: Any, deliver: Callable[[Items], None]) -> None:
        self.loop = loop
        self._deliver = deliver
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.batches: deque[Items] = deque()
        self.attached = False  # set on the loop once its reader is in place
        self.broken = False  # the loop cannot watch a pipe: call_soon_threadsafe it is
        loop.call_soon_threadsafe(self._attach)

    def _attach(self) -> None:  # on the loop
        try:
            self.loop.add_reader(self.read_fd, self._drain)
        except NotImplementedError:  # e.g. a proactor loop
            self.broken = True
            return
        self.attached = True

    def _drain(self) -> None:  # on the loop
        # Read first: a batch queued after this read comes with a byte written after it.
        with contextlib.suppress(BlockingIOError):
            os.read(self.read_fd, 4096)
        while self.batches:
            self._deliver(self.batches.popleft())

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError):  # a full pipe: the loop is awake already
            os.write(self.write_fd, b"\0")

    def close(self) -> None:
        if self.loop.is_closed():
            self._close_fds()
            return
        try:  # the reader goes first, on the loop: its selector must not keep a closed fd
            self.loop.call_soon_threadsafe(self._detach)
        except RuntimeError:  # closed meanwhile
            self._close_fds()

    def _detach(self) -> None:  # on the loop
        if self.attached:
            self.loop.remove_reader(self.read_fd)
        self._close_fds()

    def _close_fds(self) -> None:
        os.close(self.read_fd)
        os.close(self.write_fd)


class Wakers:
    """The engine thread's side: one LoopWaker per event loop it delivers to."""

    def __init__(self, deliver: Callable[[Items], None]) -> None:
        self._deliver = deliver
        self._by_loop: dict[Any, LoopWaker] = {}
        self._pending: list[LoopWaker] = []  # queued batches, no wake-up written yet

    def post(self, loop: Any, items: Items) -> None:
        """Queue a batch for `loop`; it is woken by the next decode or `wake_all`."""
        waker = self._by_loop.get(loop)
        if waker is None or not waker.attached:
            if loop.is_closed():
                self._forget(loop)
                _log.debug("dropping events for a closed event loop")
                return
            if waker is None:
                waker = self._by_loop[loop] = LoopWaker(loop, self._deliver)
            # Until its reader is in place (and for good on a loop that has none): in order,
            # since the reader is set up by a callback queued before this one.
            loop.call_soon_threadsafe(self._deliver, items)
            return
        if loop.is_closed():
            self._forget(loop)
            _log.debug("dropping events for a closed event loop")
            return
        waker.batches.append(items)
        if waker not in self._pending:
            self._pending.append(waker)

    def take(self) -> LoopWaker | None:
        """For the decode about to start: the loop whose pipe it is to write to from C (None:
        no loop waits); any other loop waiting is woken now."""
        if not self._pending:
            return None
        first, *others = self._pending
        self._pending.clear()
        for waker in others:
            waker.wake()
        return first

    def wake_all(self) -> None:
        """Wake every loop with batches queued (no decode is coming to do it)."""
        pending, self._pending = self._pending, []
        for waker in pending:
            waker.wake()

    def close(self) -> None:
        for loop in list(self._by_loop):
            self._forget(loop)

    def _forget(self, loop: Any) -> None:
        waker = self._by_loop.pop(loop, None)
        if waker is not None:
            if waker in self._pending:
                self._pending.remove(waker)
            waker.close()
