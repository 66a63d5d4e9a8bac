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
- the server process's own CPU per GET of each route (summed over its threads' schedstat, with
  the engine idle), and per GET /health, the gRPC hop alone: the robust figure on a shared
  machine. The bridge and the scraper are other processes.

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


async def _stream(stub: service_pb2_grpc.LlamaServerStub, first: int, n_predict: int) -> int:
    req = completion_pb2.CompletionRequest(stream=True, n_predict=n_predict, ignore_eos=True,
                                           temperature=0.0, cache_prompt=False)
    req.prompt.list_value.values.extend(
        struct_pb2.Value(number_value=(first + j) % 30_000 + 1000) for j in range(32))
    n = 0
    async for msg in stub.Completion(req):
        n += len(msg.tokens)
    return n


async def _scrape(url: str, interval: float, stop: asyncio.Event) -> int:
    done = 0
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        while not stop.is_set():
            for path in ("/metrics", "/slots"):
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


def thread_times(pid: int) -> dict[int, tuple[int, int]]:
    """Each thread's (ns on a CPU, ns waiting for one), from /proc/PID/task/*/schedstat."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):  # a thread that just ended
            run, wait, _ = (task / "schedstat").read_text().split()
            out[int(task.name)] = int(run), int(wait)
    return out


def blocked_share(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]],
                  wall_ns: int, pid: int) -> float:
    """The engine thread's time neither on a CPU nor waiting for one, as a share of `wall_ns`.
    The engine's is the busiest thread but the main one (the event loop's, `pid`)."""
    deltas = [(a[0] - before.get(tid, (0, 0))[0], a[1] - before.get(tid, (0, 0))[1])
              for tid, a in after.items() if tid != pid]
    if not deltas or wall_ns <= 0:
        return 0.0
    run, wait = max(deltas)
    return max(wall_ns - run - wait, 0) / wall_ns


async def _run(stub: service_pb2_grpc.LlamaServerStub, url: str, pid: int, streams: int,
               n_predict: int, rep: int, scrape: bool) -> Run:
    stop = asyncio.Event()
    scraper = asyncio.create_task(_scrape(url, 0.1, stop)) if scrape else None
    before, t0 = thread_times(pid), time.perf_counter_ns()
    counts = await asyncio.gather(*(_stream(stub, (rep * streams + i) * 97, n_predict)
                                    for i in range(streams)))
    wall = time.perf_counter_ns() - t0
    blocked = blocked_share(before, thread_times(pid), wall, pid)
    stop.set()
    return Run(sum(counts) * 1e9 / wall, await scraper if scraper is not None else 0, blocked)


async def _drive(address: str, url: str, pid: int, streams: int, n_predict: int,
                 reps: int) -> list[tuple[Run, Run]]:
    """(unscraped, scraped) runs, each pair run back to back, in alternating order."""
    out = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = service_pb2_grpc.LlamaServerStub(channel)
        await _stream(stub, 0, 4)  # warm-up
        for rep in range(reps):
            pair: dict[bool, Run] = {}
            for scrape in ((False, True) if rep % 2 == 0 else (True, False)):
                pair[scrape] = await _run(stub, url, pid, streams, n_predict,
                                          2 * rep + scrape, scrape)
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


def measure(model: Path, streams: int, n_predict: int, reps: int, threads: int,
            extra: Sequence[str] = ()) -> str:
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
                                  n_predict, reps))
        cpu = _server_cpu_per_scrape(url, server.pid)
    finally:
        server.terminate()
        server.wait(60)
    return report(model.name, streams, n_predict, threads, runs, cpu)


def report(model: str, streams: int, n_predict: int, threads: int,
           runs: Sequence[tuple[Run, Run]], cpu: dict[str, float]) -> str:
    off = statistics.median(a.rate for a, _ in runs)
    on = statistics.median(b.rate for _, b in runs)
    mid, q1, q3, lo, hi = ratio_spread([(a.rate, b.rate) for a, b in runs])
    scrapes = sum(b.scrapes for _, b in runs)
    per_core = (cpu["/metrics"] + cpu["/slots"]) * 10 / 1000 * 100  # both every 100 ms
    blocked_off = statistics.median(a.blocked for a, _ in runs) * 100
    blocked_on = statistics.median(b.blocked for _, b in runs) * 100
    return (f"{model}, {streams} streams x {n_predict} tokens, {len(runs)} runs each, "
            f"server -t {threads}: "
            f"{off:,.1f} tok/s unscraped, {on:,.1f} tok/s scraped every 100 ms "
            f"({scrapes} scrapes of /metrics and /slots answered)\n"
            f"  throughput ratio scraped / unscraped, pair by pair: median {mid:.3f}, "
            f"middle half {q1:.3f}-{q3:.3f}, all {lo:.3f}-{hi:.3f}\n"
            f"  unscraped runs: {', '.join(f'{a.rate:,.1f}' for a, _ in runs)}\n"
            f"  scraped runs:   {', '.join(f'{b.rate:,.1f}' for _, b in runs)}\n"
            f"  engine thread blocked (not running, not waiting for a core; median of runs): "
            f"{blocked_off:.2f}% unscraped, {blocked_on:.2f}% scraped\n"
            f"  server CPU per scrape: /metrics {cpu['/metrics']:.2f} ms, "
            f"/slots {cpu['/slots']:.2f} ms, GET /health (the gRPC hop alone) "
            f"{cpu['/health']:.2f} ms; {per_core:.1f}% of one core for both at 10 Hz")


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
    args = p.parse_args(argv)
    model = Path(args.model) if Path(args.model).is_file() else ensure_model(args.model)
    threads = args.threads or max(1, len(os.sched_getaffinity(0)) - 1)
    print(measure(model, args.streams, args.tokens, args.reps, threads,
                  shlex.split(args.server_args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
