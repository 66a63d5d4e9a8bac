"""ggml computations off the engine thread run on a thread that ends with them.

ggml's CPU backend computes a graph through OpenMP. libgomp keeps a team of worker threads for
each thread that ever ran a parallel region, for as long as that thread lives, and once the
process holds more of its threads than there are CPUs it cuts every team's spin at a barrier
to ~100 iterations: the workers sleep and wake at every barrier instead. A second team that
lives on in a pooled thread (a media encode on a request-preparation worker, a warm-up on the
loader) thus made the engine's `-t 2` decodes on two cores switch context ~350 times a token
and run ~15% slower (docs/benchmarks.md, "One OpenMP team"). The engine thread does every
decode; the few computations that cannot wait for it (libmtmd's projector) run here, so that
their team goes when they are done.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def run_on_passing_thread(fn: Callable[[], T], name: str = "ggml-compute") -> T:
    """fn() on a new thread, waited for; its result returned, its exception raised here."""
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as e:  # re-raised on the caller's thread
            error.append(e)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]
