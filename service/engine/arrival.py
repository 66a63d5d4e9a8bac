"""Arrivals: requests the service has begun reading but not yet handed to the engine.

Requests sent together reach the engine 0.2-0.7 ms apart (one event loop reads their RPCs in
turn). An engine that has just left idle waits for the open arrivals, up to ARRIVAL_WAIT_S,
before it decodes, and an arrival that opens during that first prompt decode interrupts it (see
BURST_WINDOW_S): so a burst is prefilled in one step rather than the later requests waiting for
the first ones' prompts. A lone request has no other open arrival and is not delayed.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

# How long an engine in a burst (BURST_WINDOW_S) waits, at most, at one look for requests the
# service has begun reading before it decodes. Reading one takes 0.2-1 ms; a request that is
# slower (a long text to tokenize) joins a later step instead.
ARRIVAL_WAIT_S = 0.003
# For this long after an idle engine takes a request, and while no request of that burst has a
# token yet, a request that begins arriving interrupts the prompt decode under way (where
# llama.cpp computes on the CPU) so that it joins a redone one. Bounds the work thrown away per
# burst; llama.cpp drops what an interrupted decode computed.
BURST_WINDOW_S = 0.015


_CLOSING = threading.Lock()


class ArrivalTarget(Protocol):
    """What an Arrival tells the engine (engine.Engine)."""

    def arrival_opened(self) -> None: ...

    def arrival_closed(self, taken: bool) -> None: ...


class ArrivalCounter:
    """The engine's count of open arrivals and the end of its current burst window."""

    def __init__(self) -> None:
        self.open = 0
        self.lock = threading.Lock()
        self.burst_until = 0.0  # time.monotonic()

    def in_window(self) -> bool:
        return time.monotonic() < self.burst_until


class Arrival:
    """A request being read: open from the RPC's start until the engine takes the request's
    (last) task from its inbox, or until the request ends without one."""

    __slots__ = ("_target",)

    def __init__(self, target: ArrivalTarget | None) -> None:
        self._target = target
        if target is not None:
            target.arrival_opened()

    def close(self, taken: bool = True) -> bool:
        """Stop counting this arrival (the engine has its task, or there is none); whether it
        was still open. Safe from any thread, any number of times."""
        with _CLOSING:  # the engine thread and the request's own thread may both close it
            target, self._target = self._target, None
        if target is None:
            return False
        target.arrival_closed(taken)
        return True

    def __enter__(self) -> Arrival:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(taken=False)  # ended with no task: a waiting engine is woken
