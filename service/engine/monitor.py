"""What /metrics and /slots read: a snapshot the engine publishes after each turn of its loop.

The RPCs never call into the engine thread (GetMetrics and ListSlots do not wait for a step, and
cannot delay one): the engine thread writes the counters and histograms here as it goes and, once
per loop turn, publishes an `EngineSnapshot` (one attribute assignment, which other threads read
whole). Publishing costs two small copies (the counters), per loop turn, not per token and not
per slot; what the slots hold is read when asked. Histograms are bucket counts in preallocated
lists: observing one allocates nothing.

Slots and their tasks are shared, not copied: their ints and lists are read from another thread
(each read is atomic under the GIL), so a slot's fields may be one token apart from each other.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from service.engine.slots import Slot

T = TypeVar("T")

# Seconds. Time to first token and queue wait go from milliseconds (a short prompt on a GPU) to
# minutes (a long queue on a CPU); the gap between two tokens of one request is one decode step.
TTFT_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                  120.0)
TOKEN_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56,
                   5.12)


class Histogram:
    """Cumulative-on-read histogram: counts[i] holds the observations in (bounds[i-1],
    bounds[i]]; the last count is above every bound. Written by the engine thread only."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float, n: int = 1) -> None:
        self.counts[bisect_left(self.bounds, value)] += n
        self.sum += value * n

    def read(self) -> tuple[tuple[int, ...], float]:
        """(counts, sum) for another thread: the tuple copy is one atomic step."""
        return tuple(self.counts), self.sum


class SlotState(NamedTuple):
    id: int
    busy: bool
    task: Any  # the running task, else the last one this slot ran, else None
    n_cells: int = 0  # the KV cells its cache holds (llama-server's n_prompt_tokens)


@dataclass
class MonitorCounters:
    """Ours, and llama-server's that the engine's own stats do not keep. Engine thread only."""

    prompt_tokens_cached_total: int = 0  # prompt tokens reused from a slot's cache
    requests_cancelled_total: int = 0  # queued or running when cancelled
    requests_finished_total: int = 0
    # llama-server's prediction bucket: each finished request's generation time and steps
    # (tokens after the first, which comes with the prompt's decode).
    predicted_seconds_total: float = 0.0
    predicted_steps_total: int = 0
    n_tokens_max: int = 0  # the longest sequence (prompt + generated) seen in a slot


class EngineSnapshot:
    """What the RPCs read. The counters are copies made when it was published; the slots are
    read when asked (`slots`, `kv_cells_*`, `n_tokens_max`), from the Slot objects and tasks
    the engine owns: each such read is of one attribute, an int or a list's length, atomic
    under the GIL. Publishing thus costs two small copies a loop turn, whatever the slots."""

    __slots__ = ("_last_task", "_slots", "counters", "kv_cells_total", "n_waiting",
                 "published", "queue_wait", "stats", "token_gap", "ttft")

    def __init__(self, monitor: Monitor, stats: Any, n_waiting: int) -> None:
        self.published = time.time()
        self.stats = _copy(stats)  # the engine's EngineStats
        self.counters: MonitorCounters = _copy(monitor.counters)
        self.n_waiting = n_waiting
        self.kv_cells_total = monitor.kv_cells_total
        self.ttft, self.token_gap = monitor.ttft, monitor.token_gap  # shared: Histogram.read()
        self.queue_wait = monitor.queue_wait
        self._slots, self._last_task = monitor.slots, monitor.last_task

    @property
    def slots(self) -> tuple[SlotState, ...]:
        out = []
        for s in self._slots:
            task = s.task  # one read: the running task or None
            out.append(SlotState(s.id, task is not None, task or self._last_task[s.id],
                                 len(s.cache_tokens)))
        return tuple(out)

    @property
    def idle_slots(self) -> int:
        return sum(1 for s in self._slots if s.task is None)

    @property
    def kv_cells_used(self) -> int:
        return sum(len(s.cache_tokens) for s in self._slots)

    @property
    def kv_cells_reserved(self) -> int:
        return sum(s.task.reserved for s in self.slots if s.busy)

    @property
    def n_tokens_max(self) -> int:
        running = [int(s.task.n_past) for s in self.slots if s.busy]
        return max([self.counters.n_tokens_max, *running])


def _copy(obj: T) -> T:
    """A shallow copy of a plain object (copy.copy's protocol costs several times more)."""
    out = object.__new__(type(obj))
    out.__dict__.update(obj.__dict__)
    return out


class Monitor:
    """The engine's side: hooks called on the engine thread, and `publish`."""

    def __init__(self, slots: Sequence[Slot], kv_cells_total: int) -> None:
        self.slots = slots
        self.kv_cells_total = kv_cells_total
        self.counters = MonitorCounters()
        self.ttft = Histogram(TTFT_BUCKETS_S)
        self.token_gap = Histogram(TOKEN_BUCKETS_S)
        self.queue_wait = Histogram(TTFT_BUCKETS_S)
        self.last_task: list[Any] = [None] * len(slots)  # each slot's latest, by slot id
        self._last_sampled = 0.0
        self.snapshot: EngineSnapshot | None = None

    # -- hooks (engine thread) --------------------------------------------------------------
    def started(self, task: Any) -> None:
        """`task` took its slot (its prompt's cached part is known)."""
        self.queue_wait.observe(max(task.t_start - task.submitted, 0.0))
        self.counters.prompt_tokens_cached_total += task.n_cached
        self.last_task[task.slot.id] = task

    def sampled(self, tasks: Sequence[Any], now: float) -> None:
        """A step sampled one token for each of `tasks`: a request's first token gives its time
        to first token; the others' tokens came one step after their previous one."""
        n_later = 0
        for task in tasks:
            n = len(task.generated)
            if n == 1:
                self.ttft.observe(max(task.t_first - task.submitted, 0.0))
            elif n > 1:
                n_later += 1
        if n_later and self._last_sampled:
            self.token_gap.observe(now - self._last_sampled, n_later)
        self._last_sampled = now

    def cancelled(self, n: int) -> None:
        self.counters.requests_cancelled_total += n

    def ended(self, task: Any, finished: bool) -> None:
        """`task` left its slot: `finished` normally, else failed or cancelled."""
        c = self.counters
        c.n_tokens_max = max(c.n_tokens_max, task.n_past)
        if not finished:
            return
        c.requests_finished_total += 1
        if task.t_first:
            c.predicted_seconds_total += time.perf_counter() - task.t_first
            c.predicted_steps_total += max(len(task.generated) - 1, 0)

    def publish(self, stats: Any, scheduler: Any) -> None:
        """Once per loop turn: the state other threads read."""
        self.snapshot = EngineSnapshot(self, stats, len(scheduler.waiting))
