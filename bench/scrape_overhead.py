"""What monitoring costs: N streams through gRPC with and without a scraper that fetches
GET /metrics and GET /slots through the REST bridge every 100 ms (what a Prometheus scraper and
a load balancer's probe do), runs interleaved (off, on, on, off, ...) on one server:

    python -m bench.scrape_overhead                 # the bench model, 8 streams
    python -m bench.scrape_overhead --model tiny-bpe --tokens 32 --reps 3

Prints, for readers who want "does scraping cost throughput?":
- the throughput ratio scraped / unscraped of each pair of neighbouring runs: the median, and
  the spread of the pairs (middle half, all): 1.00 inside the spread is "no measurable cost";
- the engine thread's time blocked (neither running nor waiting for a core: waiting for the
  GIL, mostly) as a share of each run, with and without scraping, from the kernel's per-thread
  schedstat: what a scrape's Python work on the event loop takes from the engine, whatever else
  loads the machine (time waiting for a core is counted apart);
- the same over each run's steady state (every stream generating, none finished: start-up and
  wind-down, where the engine idles waiting for requests, left out), and from it the engine's
  extra blocked time per GET: the figure to set against the server's CPU per GET (a GET cannot
  take the engine more GIL time than the loop spends on it; `--interval 0.01` magnifies it),
  and the engine's share waiting for a core (what the bridge, the scraper and other jobs take
  from it on a small machine, where throughput moves with it; not the GIL);
- the server process's own CPU per GET of each route (summed over its threads' schedstat, with
  the engine idle), and per GET /health, the gRPC hop alone: the robust figure on a shared
  machine. The bridge and the scraper are other processes.

The scraper's HTTP client and its connection are made before the first run and it starts after
the streams' requests are sent: made inside each scraped run (as before 2026-12-07) its set-up
(an httpx client builds an SSL context: 20-30 ms of CPU here) ran on the bench's event loop
ahead of the streams, so every scraped run started late while the engine idled, which read as
~5 % of throughput and ~3 ms of engine blocked per GET (docs/benchmarks.md).

The server gets usable CPUs - 1 threads, as in `python -m bench`, so that on a small machine the
scraper has a core. GetMetrics and ListSlots read the snapshot the engine publishes after each
loop turn (service/engine/monitor.py) and never wait for a step.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
from google.protobuf import struct_pb2
from llama.v1 import completion_pb2, service_pb2_grpc

from bench.servers import free_port
from native.testmodels import ensure_model


class Window:
    """A run's steady state: from the moment every stream has its first token to the moment
    the first one has all of its tokens. What start-up and wind-down add (the engine idle,
    waiting for requests to arrive or to be read) is left out, and so is the scraper's first
    GET, sent as the run begins."""

    def __init__(self, pid: int, streams: int) -> None:
        self.pid, self.waiting, self.tokens = pid, streams, 0
        self.start: tuple[int, dict[int, tuple[int, int]], int] | None = None
        self.end: tuple[int, dict[int, tuple[int, int]], int] | None = None
        self.gets: list[int] = []  # when each GET of the scraper was sent (perf_counter_ns)

    def _mark(self) -> tuple[int, dict[int, tuple[int, int]], int]:
        return time.perf_counter_ns(), thread_times(self.pid), self.tokens

    def first_token(self) -> None:
        self.waiting -= 1
        if self.waiting == 0:
            self.start = self._mark()

    def stream_done(self) -> None:
        if self.end is None and self.start is not None:
            self.end = self._mark()


async def _stream(stub: service_pb2_grpc.LlamaServerStub, first: int, n_predict: int,
                  window: Window | None = None) -> int:
    req = completion_pb2.CompletionRequest(stream=True, n_predict=n_predict, ignore_eos=True,
                                           temperature=0.0, cache_prompt=False)
    req.prompt.list_value.values.extend(
        struct_pb2.Value(number_value=(first + j) % 30_000 + 1000) for j in range(32))
    n = 0
    async for msg in stub.Completion(req):
        if window is not None and msg.tokens:
            window.tokens += len(msg.tokens)
            if not n:
                window.first_token()
            if n + len(msg.tokens) >= n_predict:
                window.stream_done()
        n += len(msg.tokens)
    return n


async def _scrape(http: httpx.AsyncClient, paths: Sequence[str], interval: float,
                  stop: asyncio.Event, window: Window) -> int:
    done = 0
    while not stop.is_set():
        for path in paths:
            window.gets.append(time.perf_counter_ns())
            r = await http.get(path)
            r.raise_for_status()
            done += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
    return done


@dataclass(frozen=True)
class Run:
    rate: float  # tokens/s, all streams together
    scrapes: int  # GETs answered during the run
    blocked: float  # share of the run the engine thread was blocked (not running, not runnable)
    # the steady state (Window): tokens/s, the engine's blocked share, its length in seconds
    # and the GETs sent in it
    steady_rate: float = 0.0
    steady_blocked: float = 0.0
    steady_s: float = 0.0
    steady_gets: int = 0
    steady_waiting: float = 0.0  # the engine's share of the steady state waiting for a core


def thread_times(pid: int) -> dict[int, tuple[int, int]]:
    """Each thread's (ns on a CPU, ns waiting for one), from /proc/PID/task/*/schedstat."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):  # a thread that just ended
            run, wait, _ = (task / "schedstat").read_text().split()
            out[int(task.name)] = int(run), int(wait)
    return out


def _engine(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]],
            pid: int) -> tuple[int, int] | None:
    """The engine thread's (ns on a CPU, ns waiting for one) between the two reads: the
    busiest thread but the main one (the event loop's, `pid`)."""
    deltas = [(a[0] - before.get(tid, (0, 0))[0], a[1] - before.get(tid, (0, 0))[1])
              for tid, a in after.items() if tid != pid]
    return max(deltas) if deltas else None


def blocked_share(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]],
                  wall_ns: int, pid: int) -> float:
    """The engine thread's time neither on a CPU nor waiting for one, as a share of `wall_ns`."""
    times = _engine(before, after, pid)
    if times is None or wall_ns <= 0:
        return 0.0
    run, wait = times
    return max(wall_ns - run - wait, 0) / wall_ns


def waiting_share(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]],
                  wall_ns: int, pid: int) -> float:
    """The engine thread's time runnable but waiting for a core, as a share of `wall_ns`:
    what other processes (the bridge, the scraper, other jobs) take from it on a small
    machine, apart from the GIL."""
    times = _engine(before, after, pid)
    return times[1] / wall_ns if times is not None and wall_ns > 0 else 0.0


def _steady(window: Window) -> tuple[float, float, float, int, float]:
    """Run's steady_* fields, all 0 if there was no steady state (a stream ended first)."""
    if window.start is None or window.end is None or window.end[0] <= window.start[0]:
        return 0.0, 0.0, 0.0, 0, 0.0
    (t0, before, n0), (t1, after, n1) = window.start, window.end
    return ((n1 - n0) * 1e9 / (t1 - t0), blocked_share(before, after, t1 - t0, window.pid),
            (t1 - t0) / 1e9, sum(1 for t in window.gets if t0 <= t < t1),
            waiting_share(before, after, t1 - t0, window.pid))


async def _run(stub: service_pb2_grpc.LlamaServerStub, http: httpx.AsyncClient, pid: int,
               streams: int, n_predict: int, rep: int, scrape: Sequence[str],
               interval: float) -> Run:
    """One run; the scraper (if `scrape` names paths) starts after the streams' requests are
    on their way, on a connection made before, so that its set-up delays no stream."""
    stop, window = asyncio.Event(), Window(pid, streams)
    before, t0 = thread_times(pid), time.perf_counter_ns()
    load = asyncio.gather(*(_stream(stub, (rep * streams + i) * 97, n_predict, window)
                            for i in range(streams)))
    scraper = (asyncio.create_task(_scrape(http, scrape, interval, stop, window))
               if scrape else None)
    counts = await load
    wall = time.perf_counter_ns() - t0
    blocked = blocked_share(before, thread_times(pid), wall, pid)
    stop.set()
    scrapes = await scraper if scraper is not None else 0
    return Run(sum(counts) * 1e9 / wall, scrapes, blocked, *_steady(window))


async def _drive(address: str, url: str, pid: int, streams: int, n_predict: int,
                 reps: int, paths: Sequence[str], interval: float) -> list[tuple[Run, Run]]:
    """(unscraped, scraped) runs, each pair run back to back, in alternating order."""
    out = []
    async with (grpc.aio.insecure_channel(address) as channel,
                httpx.AsyncClient(base_url=url, timeout=30) as http):
        stub = service_pb2_grpc.LlamaServerStub(channel)
        await _stream(stub, 0, 4)  # warm-up
        for path in paths:  # the scraper's connection, made before any run
            (await http.get(path)).raise_for_status()
        for rep in range(reps):
            pair: dict[bool, Run] = {}
            for scrape in ((False, True) if rep % 2 == 0 else (True, False)):
                pair[scrape] = await _run(stub, http, pid, streams, n_predict,
                                          2 * rep + scrape, paths if scrape else (), interval)
            out.append((pair[False], pair[True]))
    return out


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"server not ready:\n{log.read_text()[-3000:]}")


def _cpu_ns(pid: int) -> int:
    return sum(run for run, _ in thread_times(pid).values())


def _server_cpu_per_scrape(url: str, pid: int, n: int = 300) -> dict[str, float]:
    """Milliseconds of the server process's CPU per GET of each route (engine idle)."""
    out = {}
    with httpx.Client(base_url=url, timeout=30) as http:
        for path in ("/health", "/metrics", "/slots"):
            http.get(path).raise_for_status()
            before = _cpu_ns(pid)
            for _ in range(n):
                http.get(path).raise_for_status()
            out[path] = (_cpu_ns(pid) - before) / 1e6 / n
    return out


def ratio_spread(pairs: Sequence[tuple[float, float]]) -> tuple[float, float, float, float,
                                                                  float]:
    """(median, lower quartile, upper quartile, min, max) of each pair's second / first."""
    ratios = sorted(b / a for a, b in pairs if a > 0)
    if not ratios:
        return (float("nan"),) * 5
    if len(ratios) == 1:
        return (ratios[0],) * 5
    q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return statistics.median(ratios), q1, q3, ratios[0], ratios[-1]


SCRAPED = ("/metrics", "/slots")


def measure(model: Path, streams: int, n_predict: int, reps: int, threads: int,
            extra: Sequence[str] = (), paths: Sequence[str] = SCRAPED,
            interval: float = 0.1) -> str:
    grpc_port, http_port = free_port(), free_port()
    url = f"http://127.0.0.1:{http_port}"
    cmd = [sys.executable, "-m", "service.cli", "-m", str(model), "-c", str(1024 * streams),
           "-np", str(streams), "--metrics", "--grpc-port", str(grpc_port),
           "--host", "127.0.0.1", "--port", str(http_port),
           "-t", str(threads), "-tb", str(threads), *extra]
    log = Path(tempfile.gettempdir()) / f"scrape-overhead-{grpc_port}.log"
    with log.open("w") as out:
        server = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_ready(url, server, log)
        runs = asyncio.run(_drive(f"127.0.0.1:{grpc_port}", url, server.pid, streams,
                                  n_predict, reps, paths, interval))
        cpu = _server_cpu_per_scrape(url, server.pid)
    finally:
        server.terminate()
        server.wait(60)
    return report(model.name, streams, n_predict, threads, runs, cpu, paths, interval)


def blocked_per_get(runs: Sequence[tuple[Run, Run]]) -> float:
    """Milliseconds of the engine thread's time blocked per GET, over the steady states: the
    scraped run's blocked share less its unscraped neighbour's, times the scraped run's
    length, over its GETs; the median of the pairs (nan without any)."""
    each = [(b.steady_blocked - a.steady_blocked) * b.steady_s * 1000 / b.steady_gets
            for a, b in runs if a.steady_s > 0 and b.steady_gets > 0]
    return statistics.median(each) if each else float("nan")


def _pct(runs: Sequence[tuple[Run, Run]], field: str) -> tuple[float, float]:
    return (statistics.median(getattr(a, field) for a, _ in runs) * 100,
            statistics.median(getattr(b, field) for _, b in runs) * 100)


def report(model: str, streams: int, n_predict: int, threads: int,
           runs: Sequence[tuple[Run, Run]], cpu: dict[str, float],
           paths: Sequence[str] = SCRAPED, interval: float = 0.1) -> str:
    off = statistics.median(a.rate for a, _ in runs)
    on = statistics.median(b.rate for _, b in runs)
    mid, q1, q3, lo, hi = ratio_spread([(a.rate, b.rate) for a, b in runs])
    s_mid, s_q1, s_q3, s_lo, s_hi = ratio_spread([(a.steady_rate, b.steady_rate)
                                                  for a, b in runs])
    scrapes = sum(b.scrapes for _, b in runs)
    hz = 1 / interval if interval > 0 else 0.0
    per_core = sum(cpu.get(p, 0.0) for p in paths) * hz / 1000 * 100
    every = f"every {interval * 1000:g} ms" if interval > 0 else "back to back"
    load = f"at {hz:g} Hz" if interval > 0 else "(back to back: n/a)"
    blocked_off, blocked_on = _pct(runs, "blocked")
    steady_off, steady_on = _pct(runs, "steady_blocked")
    waiting_off, waiting_on = _pct(runs, "steady_waiting")
    steady_s = statistics.median(b.steady_s for _, b in runs)
    named = " and ".join(paths)
    return (f"{model}, {streams} streams x {n_predict} tokens, {len(runs)} runs each, "
            f"server -t {threads}: "
            f"{off:,.1f} tok/s unscraped, {on:,.1f} tok/s scraped {every} "
            f"({scrapes} scrapes of {named} answered)\n"
            f"  throughput ratio scraped / unscraped, pair by pair: median {mid:.3f}, "
            f"middle half {q1:.3f}-{q3:.3f}, all {lo:.3f}-{hi:.3f}\n"
            f"  unscraped runs: {', '.join(f'{a.rate:,.1f}' for a, _ in runs)}\n"
            f"  scraped runs:   {', '.join(f'{b.rate:,.1f}' for _, b in runs)}\n"
            f"  engine thread blocked (not running, not waiting for a core; median of runs): "
            f"{blocked_off:.2f}% unscraped, {blocked_on:.2f}% scraped\n"
            f"  steady state (every stream generating; {steady_s:.2f} s of a scraped run): "
            f"ratio median {s_mid:.3f}, middle half {s_q1:.3f}-{s_q3:.3f}, "
            f"all {s_lo:.3f}-{s_hi:.3f}; engine blocked {steady_off:.2f}% unscraped, "
            f"{steady_on:.2f}% scraped: {blocked_per_get(runs):+.3f} ms per GET "
            f"({sum(b.steady_gets for _, b in runs)} GETs); waiting for a core "
            f"{waiting_off:.2f}% unscraped, {waiting_on:.2f}% scraped\n"
            f"  server CPU per scrape: /metrics {cpu['/metrics']:.2f} ms, "
            f"/slots {cpu['/slots']:.2f} ms, GET /health (the gRPC hop alone) "
            f"{cpu['/health']:.2f} ms; {per_core:.1f}% of one core for {named} {load}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="bench",
                   help="a GGUF path or a generated model's name (default: bench)")
    p.add_argument("--streams", type=int, default=8)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--reps", type=int, default=4)
    p.add_argument("--threads", type=int,
                   help="the server's -t/-tb (default: usable CPUs - 1, at least 1)")
    p.add_argument("--server-args", default="",
                   help="more server flags, one string of shell words (e.g. '-ngl 99' on a GPU)")
    p.add_argument("--interval", type=float, default=0.1,
                   help="seconds between two rounds of GETs (default 0.1: 10 Hz); a shorter "
                   "one magnifies what a GET costs the engine")
    p.add_argument("--paths", default=",".join(SCRAPED),
                   help="the routes each round GETs, comma-separated (default: /metrics,/slots)")
    args = p.parse_args(argv)
    model = Path(args.model) if Path(args.model).is_file() else ensure_model(args.model)
    threads = args.threads or max(1, len(os.sched_getaffinity(0)) - 1)
    print(measure(model, args.streams, args.tokens, args.reps, threads,
                  shlex.split(args.server_args), args.paths.split(","), args.interval))
    return 0


if __name__ == "__main__":
    sys.exit(main())
