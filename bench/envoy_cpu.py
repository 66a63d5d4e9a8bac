"""What REST through Envoy costs the service beyond plain gRPC streaming (issue 24), in CPU
rather than wall-clock throughput, which a shared machine cannot resolve to 3 %:

    python -m bench.envoy_cpu                       # tiny-bpe, 8 and 64 streams
    python -m bench.envoy_cpu --streams 64 --tokens 64 --reps 3

One service (with its REST bridge) and Envoy in front of it (bench/envoy_path.py); N streams
of `--tokens` tokens each (32 prompt tokens, greedy, ignore_eos, no prompt cache) through each
path, the paths interleaved rep by rep:

- `grpc`: llama.v1 Completion over gRPC (the baseline: the same engine work, no rendering);
- `bridge` / `envoy`: POST /completion, streamed, through the REST bridge (which renders in its
  own process) and through Envoy (the service renders: llama.v1.LlamaServerHttp);
- `bridge-chat` / `envoy-chat`: streaming POST /v1/chat/completions through each.

For each, from the kernel's per-thread schedstat of the service process (the bridge, Envoy and
the clients are other processes): the service's CPU per generated token, the event loop's
(main thread's) share of it, and the engine thread's blocked share (neither running nor waiting
for a core: waiting for the GIL, mostly; bench/scrape_overhead.py). A tiny model makes steps
fast, as a GPU's are, so the host's work per token shows.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
from google.api.httpbody_pb2 import HttpBody
from google.protobuf import struct_pb2
from llama.v1 import completion_pb2, http_pb2_grpc, service_pb2_grpc

from bench.envoy_path import start_envoy
from bench.scrape_overhead import blocked_share, thread_times
from bench.servers import ServerSettings, start_our_service
from native.testmodels import ensure_model

PATHS = ("grpc", "bridge", "envoy", "bridge-chat", "envoy-chat")
# Also measurable: LlamaServerHttp's Completion called over gRPC straight, without Envoy.
EXTRA_PATHS = ("http-rpc",)
PROMPT_TOKENS = 32


@dataclass(frozen=True)
class Sample:
    tokens: int
    cpu_ns: int  # the service process, all threads
    loop_ns: int  # its main thread: the event loop
    blocked: float  # the engine thread's blocked share of the run


async def _grpc_stream(stub: service_pb2_grpc.LlamaServerStub, seed: int, n: int) -> int:
    req = completion_pb2.CompletionRequest(stream=True, n_predict=n, ignore_eos=True,
                                           temperature=0.0, cache_prompt=False)
    req.prompt.list_value.values.extend(
        struct_pb2.Value(number_value=(seed + j) % 30_000 + 1000) for j in range(PROMPT_TOKENS))
    got = 0
    async for msg in stub.Completion(req):
        got += len(msg.tokens)
    return got


async def _http_rpc_stream(stub: http_pb2_grpc.LlamaServerHttpStub, seed: int, n: int) -> int:
    """The HTTP-body RPC's SSE, as Envoy would get it: tokens from the last event."""
    body = HttpBody(content_type="application/json",
                    data=json.dumps(_completion_body(seed, n)).encode())
    last = b""
    async for msg in stub.Completion(body):
        if msg.data.startswith(b"data: {"):
            last = msg.data
    return int(json.loads(last.rstrip().rsplit(b"data: ", 1)[-1])["tokens_predicted"])


def _completion_body(seed: int, n: int) -> dict[str, object]:
    return {"prompt": [(seed + j) % 30_000 + 1000 for j in range(PROMPT_TOKENS)],
            "n_predict": n, "ignore_eos": True, "temperature": 0.0, "cache_prompt": False,
            "stream": True}


def _chat_body(seed: int, n: int) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": f"Tell me a story number {seed}."}],
            "max_tokens": n, "ignore_eos": True, "temperature": 0.0, "cache_prompt": False,
            "stream": True}


async def _http_stream(http: httpx.AsyncClient, path: str, body: dict[str, object]) -> int:
    """Tokens generated, as the stream's last event counts them."""
    last: dict[str, Any] = {}
    async with http.stream("POST", path, content=json.dumps(body),
                           headers={"content-type": "application/json"}) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"{path}: HTTP {resp.status_code} {await resp.aread()!r}")
        pending = b""
        async for chunk in resp.aiter_bytes():
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                if line.startswith(b"data: {"):
                    last = json.loads(line[6:])
    if "error" in last:
        raise RuntimeError(f"{path}: {last['error']}")
    if "tokens_predicted" in last:
        return int(last["tokens_predicted"])
    timings = last.get("timings")
    if not isinstance(timings, dict):
        raise RuntimeError(f"{path}: no token count in the last event {last}")
    return int(timings["predicted_n"])


class Driver:
    """One client per path; `run(path, streams, n)` measures one batch of streams."""

    def __init__(self, pid: int, grpc_address: str, bridge: str, envoy: str) -> None:
        self.pid = pid
        self._channel = grpc.aio.insecure_channel(grpc_address)
        self._stub = service_pb2_grpc.LlamaServerStub(self._channel)
        self._http_stub = http_pb2_grpc.LlamaServerHttpStub(self._channel)
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
        self._http = {name: httpx.AsyncClient(base_url=url, timeout=600, limits=limits)
                      for name, url in (("bridge", bridge), ("envoy", envoy))}
        self._seed = 0

    def _one(self, path: str, n: int) -> Awaitable[int]:
        self._seed += 97
        if path == "grpc":
            return _grpc_stream(self._stub, self._seed, n)
        if path == "http-rpc":
            return _http_rpc_stream(self._http_stub, self._seed, n)
        http = self._http[path.split("-")[0]]
        if path.endswith("-chat"):
            return _http_stream(http, "/v1/chat/completions", _chat_body(self._seed, n))
        return _http_stream(http, "/completion", _completion_body(self._seed, n))

    async def run(self, path: str, streams: int, n: int) -> Sample:
        before, t0 = thread_times(self.pid), time.perf_counter_ns()
        counts = await asyncio.gather(*(self._one(path, n) for _ in range(streams)))
        wall = time.perf_counter_ns() - t0
        after = thread_times(self.pid)
        cpu = sum(a[0] - before.get(t, (0, 0))[0] for t, a in after.items())
        loop = after[self.pid][0] - before[self.pid][0]
        return Sample(sum(counts), cpu, loop, blocked_share(before, after, wall, self.pid))

    async def close(self) -> None:
        await self._channel.close()
        for http in self._http.values():
            await http.aclose()


async def _measure(driver: Driver, streams: int, n: int, reps: int,
                   paths: tuple[str, ...]) -> dict[str, list[Sample]]:
    for path in paths:  # warm-up: connections, the first graphs
        await driver.run(path, min(streams, 4), 4)
    out: dict[str, list[Sample]] = {p: [] for p in paths}
    for rep in range(reps):
        for path in paths[rep % len(paths):] + paths[:rep % len(paths)]:
            out[path].append(await driver.run(path, streams, n))
            print(f"[envoy_cpu] {streams} streams, rep {rep}, {path}: "
                  f"{_us(out[path][-1].cpu_ns, out[path][-1].tokens):.1f} us/token",
                  file=sys.stderr, flush=True)
    return out


def _us(ns: int, tokens: int) -> float:
    return ns / 1e3 / max(tokens, 1)


def report(streams: int, n: int, samples: dict[str, list[Sample]]) -> str:
    lines = [f"{streams} streams x {n} tokens, {len(next(iter(samples.values())))} reps: "
             "service CPU per generated token (medians of runs)",
             "| path | service us/token | event loop us/token | engine blocked | "
             "beyond gRPC us/token |", "| --- | ---: | ---: | ---: | ---: |"]
    base = statistics.median(_us(s.cpu_ns, s.tokens) for s in samples.get("grpc", []) or
                             [Sample(1, 0, 0, 0.0)])
    for path, runs in samples.items():
        cpu = statistics.median(_us(s.cpu_ns, s.tokens) for s in runs)
        loop = statistics.median(_us(s.loop_ns, s.tokens) for s in runs)
        blocked = statistics.median(s.blocked for s in runs) * 100
        lines.append(f"| {path} | {cpu:.1f} | {loop:.1f} | {blocked:.1f}% | "
                     f"{cpu - base:+.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.envoy_cpu",
                                description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-bpe")
    p.add_argument("--streams", type=int, nargs="+", default=[8, 64])
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS + EXTRA_PATHS)
    args = p.parse_args(argv)
    model = Path(args.model) if Path(args.model).is_file() else ensure_model(args.model)
    log_dir = Path(tempfile.mkdtemp(prefix="envoy-cpu-"))
    most = max(args.streams)
    settings = ServerSettings(model=model, ctx=(PROMPT_TOKENS + args.tokens + 64) * most,
                              parallel=most, threads=args.threads)
    ours = start_our_service(settings, log_dir, bridge=True)
    try:
        envoy, envoy_url = start_envoy(ours.grpc_address, log_dir, concurrency=1)
        try:
            print(_run_all(ours.server.proc.pid, ours.grpc_address, ours.rest_url, envoy_url,
                           args))
        finally:
            envoy.stop()
    finally:
        ours.server.stop()
    return 0


def _run_all(pid: int, address: str, bridge: str, envoy: str, args: argparse.Namespace) -> str:
    async def go() -> str:
        driver = Driver(pid, address, bridge, envoy)
        try:
            parts = []
            for streams in args.streams:
                samples = await _measure(driver, streams, args.tokens, args.reps,
                                         tuple(args.paths))
                parts.append(report(streams, args.tokens, samples))
            return "\n\n".join(parts)
        finally:
            await driver.close()
    return asyncio.run(go())


if __name__ == "__main__":
    sys.exit(main())
