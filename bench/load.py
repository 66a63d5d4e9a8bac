"""Running requests: lanes of sequential requests, all lanes at once, in one or more processes.

Every scenario is a set of lanes: a lane sends its requests one after another, and all lanes run
concurrently (8 lanes of 1 request: 8 concurrent streams; 1 lane of 20: 20 sequential requests).
A Python client parsing tens of thousands of streamed messages a second is itself a bottleneck,
so with `procs` > 1 the lanes are dealt out to that many worker processes (spawned, each with its
own connection) that start together at an agreed time.monotonic() instant; CLOCK_MONOTONIC is
shared by all processes of the host, so their readings are comparable.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from bench.clients import Endpoint, GenRequest, StreamResult

Lane = tuple[GenRequest, ...]
_START_DELAY_S = 0.25  # time for every worker to receive its lanes before the common start


@dataclass(frozen=True)
class LaneResult:
    lane: int
    results: tuple[StreamResult, ...]


async def _run_lanes(endpoint: Endpoint, lanes: Sequence[tuple[int, Lane]],
                     start_at: float) -> list[LaneResult]:
    client = endpoint.client()
    try:
        async def one(index: int, lane: Lane) -> LaneResult:
            return LaneResult(index, tuple([await client.complete(r) for r in lane]))

        delay = start_at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        return list(await asyncio.gather(*(one(i, lane) for i, lane in lanes)))
    finally:
        await client.close()


def _worker(endpoint: Endpoint, lanes: list[tuple[int, Lane]],
            start_at: float) -> list[LaneResult]:
    return asyncio.run(_run_lanes(endpoint, lanes, start_at))


def _ping(n: int) -> int:
    return n  # unpickling this function imports bench.load, hence the clients, in the worker


def _init_worker(path: list[str]) -> None:
    sys.path[:] = path  # the parent's sys.path: gen/python and the repository


class LoadRunner:
    """Runs lanes against an endpoint; `procs` worker processes when more than one lane."""

    def __init__(self, procs: int = 1) -> None:
        self.procs = max(1, procs)
        self._pool: ProcessPoolExecutor | None = None
        if self.procs > 1:
            self._pool = ProcessPoolExecutor(
                self.procs, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker, initargs=(list(sys.path),))

    def run(self, endpoint: Endpoint, lanes: Sequence[Lane]) -> list[tuple[StreamResult, ...]]:
        """Each lane's results, in lane order."""
        numbered = list(enumerate(lanes))
        if self._pool is None or len(lanes) == 1:
            done = asyncio.run(_run_lanes(endpoint, numbered, 0.0))
        else:
            shards = [numbered[i::self.procs] for i in range(self.procs)]
            start_at = time.monotonic() + _START_DELAY_S
            futures = [self._pool.submit(_worker, endpoint, s, start_at) for s in shards if s]
            done = [lr for f in futures for lr in f.result()]
        done.sort(key=lambda lr: lr.lane)
        return [lr.results for lr in done]

    def warm_up(self) -> None:
        """Start every worker process now, so that interpreter start-up stays out of timings."""
        if self._pool is not None:
            list(self._pool.map(_ping, range(self.procs * 2)))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
