"""What monitoring costs: N streams through gRPC with and without a scraper that fetches
GET /metrics and GET /slots through the REST bridge every 100 ms (what a Prometheus scraper and
a load balancer's probe do), runs interleaved (off, on, off, on, ...) on one server:

    python -m bench.scrape_overhead                 # the bench model, 8 streams
    python -m bench.scrape_overhead --model tiny-bpe --tokens 32 --reps 3

Prints aggregate tokens/s (median of --reps) for each, their ratio (on / off; 1.0 means free),
how many scrapes were answered, and the server process's own CPU time per scrape of each route
(read from /proc with the engine idle: the part of a scrape that competes with the engine; the
bridge and the scraper are other processes). The server gets usable CPUs - 1 threads, as in
`python -m bench`, so that on a small machine the scraper has a core and the ratio shows what
the server pays. GetMetrics and ListSlots read the snapshot the engine
publishes after each loop turn (service/engine/monitor.py), so the ratio is the cost of
publishing it plus the scrapes' CPU on the same machine.
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


async def _run(stub: service_pb2_grpc.LlamaServerStub, url: str, streams: int, n_predict: int,
               rep: int, scrape: bool) -> tuple[float, int]:
    stop = asyncio.Event()
    scraper = asyncio.create_task(_scrape(url, 0.1, stop)) if scrape else None
    t0 = time.perf_counter()
    counts = await asyncio.gather(*(_stream(stub, (rep * streams + i) * 97, n_predict)
                                    for i in range(streams)))
    rate = sum(counts) / (time.perf_counter() - t0)
    stop.set()
    return rate, (await scraper if scraper is not None else 0)


async def _drive(address: str, url: str, streams: int, n_predict: int,
                 reps: int) -> dict[bool, list[tuple[float, int]]]:
    out: dict[bool, list[tuple[float, int]]] = {False: [], True: []}
    async with grpc.aio.insecure_channel(address) as channel:
        stub = service_pb2_grpc.LlamaServerStub(channel)
        await _stream(stub, 0, 4)  # warm-up
        for rep in range(reps):
            for scrape in ((False, True) if rep % 2 == 0 else (True, False)):
                out[scrape].append(await _run(stub, url, streams, n_predict,
                                              2 * rep + scrape, scrape))
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


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _server_cpu_per_scrape(url: str, pid: int, n: int = 200) -> dict[str, float]:
    """Milliseconds of the server process's CPU per GET of each route (engine idle)."""
    out = {}
    with httpx.Client(base_url=url, timeout=30) as http:
        for path in ("/metrics", "/slots"):
            http.get(path).raise_for_status()
            before = _cpu_seconds(pid)
            for _ in range(n):
                http.get(path).raise_for_status()
            out[path] = (_cpu_seconds(pid) - before) * 1000 / n
    return out


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
        runs = asyncio.run(_drive(f"127.0.0.1:{grpc_port}", url, streams, n_predict, reps))
        cpu = _server_cpu_per_scrape(url, server.pid)
    finally:
        server.terminate()
        server.wait(60)
    off = statistics.median(r for r, _ in runs[False])
    on = statistics.median(r for r, _ in runs[True])
    scrapes = sum(n for _, n in runs[True])
    per_second = sum(cpu.values()) * 10  # both routes every 100 ms
    return (f"{model.name}, {streams} streams x {n_predict} tokens, {reps} runs each, "
            f"server -t {threads}: "
            f"{off:,.1f} tok/s unscraped, {on:,.1f} tok/s scraped every 100 ms "
            f"(ratio {on / off:.3f}; {scrapes} scrapes of /metrics and /slots answered)\n"
            f"  unscraped runs: {', '.join(f'{r:,.1f}' for r, _ in runs[False])}\n"
            f"  scraped runs:   {', '.join(f'{r:,.1f}' for r, _ in runs[True])}\n"
            f"  server CPU per scrape: /metrics {cpu['/metrics']:.2f} ms, "
            f"/slots {cpu['/slots']:.2f} ms ({per_second / 10:.1f}% of one core at 10 Hz)")


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
