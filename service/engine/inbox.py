"""The engine's inbox: what other threads hand the engine thread (tasks, calls to run between two
steps, wake-ups), the --max-queue count of the tasks in it, and the drain of a dying engine.

Tasks in the inbox are not in the scheduler's queue yet; --max-queue counts both, and the inbox
also holds wake-ups and calls (GetLoad's among them), which it must not count.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

from service.engine.arrival import Arrival
from service.engine.task import Task


class EngineStoppedError(Exception):
    """The engine thread stopped after an unexpected error; the process is exiting so that a
    supervisor restarts it (UNAVAILABLE / HTTP 503: another replica can take the request)."""


class QueueFullError(Exception):
    """The queue of waiting requests is at --max-queue (RESOURCE_EXHAUSTED / HTTP 503)."""


Item = Task | Callable[[], None] | None  # None: a wake-up


class Inbox:
    def __init__(self, max_queue: int = 0) -> None:
        self.max_queue = max_queue  # 0: no limit
        self._queue: queue.SimpleQueue[Item] = queue.SimpleQueue()
        self._tasks = 0  # tasks in the queue above
        self._lock = threading.Lock()
        # Set once, by the engine thread, when its loop raised: what every later request gets.
        self.fatal: BaseException | None = None

    def stopped_error(self) -> EngineStoppedError:
        e = self.fatal
        return EngineStoppedError(f"the engine stopped after an internal error "
                                  f"({type(e).__name__}: {e}); the server is restarting")

    def put_task(self, task: Task, arrival: Arrival | None, n_waiting: int) -> None:
        """Hand a task over; QueueFullError when --max-queue requests already wait
        (`n_waiting` in the scheduler's queue, the rest here), EngineStoppedError when the
        engine is gone."""
        limit = self.max_queue
        with self._lock:
            if limit and n_waiting + self._tasks >= limit:
                raise QueueFullError(f"the server is busy: {limit} requests are already "
                                     "waiting (--max-queue); retry later")
            if self.fatal is not None:
                raise self.stopped_error()
            self._tasks += 1
            task.arrival = arrival
            # Under the lock: a dying engine drains the inbox after setting `fatal` under it,
            # so no task is left behind in it.
            self._queue.put(task)

    def put_call(self, job: Callable[[], None]) -> None:
        """Run `job` on the engine thread between two steps; at once (here) if it is gone, so
        that the job's future gets its EngineStoppedError."""
        with self._lock:
            if self.fatal is not None:
                job()
            else:
                self._queue.put(job)

    def wake(self) -> None:
        self._queue.put(None)

    def empty(self) -> bool:
        return self._queue.empty()

    def drain(self, block: bool, timeout: float | None,
              take: Callable[[Task], Callable[[], None] | None]) -> bool:
        """Hand each task to `take` and run each call, waiting for the first item if `block`
        (up to `timeout`); whether anything came. `take` returns what moves the task into
        the scheduler's queue, run under the lock so that the task is counted once."""
        came = False
        while True:
            try:
                item = self._queue.get(block=block, timeout=timeout)
            except queue.Empty:
                return came
            block, came = False, True
            if item is None:
                continue
            if not isinstance(item, Task):
                item()
                continue
            add = take(item)
            with self._lock:  # from the inbox to the queue at once: counted once
                if add is not None:
                    add()
                self._tasks -= 1

    def kill(self, exc: BaseException) -> list[Task]:
        """The engine died of `exc`: refuse everything from now on, run the calls the inbox
        holds (they fail) and return its tasks, which the engine fails."""
        with self._lock:
            self.fatal = exc
        tasks: list[Task] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return tasks
            if isinstance(item, Task):
                tasks.append(item)
            elif item is not None:
                item()  # a call: its future gets the EngineStoppedError
