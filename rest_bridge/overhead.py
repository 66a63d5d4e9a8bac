"""What the bridge adds to a generation: the same streamed /completion request sent to the gRPC
service directly and through the bridge, alternately, comparing time to first token and the
time per generated token after it (medians). A hook for the benchmarks, not a test: it asserts
nothing.

    python -m rest_bridge.overhead --grpc-target 127.0.0.1:50051 --rest-url http://127.0.0.1:8080

The REST side is read by a minimal HTTP/1.1 client on one keep-alive connection (the default,
`--client raw`) so that the figures are the bridge's and not the HTTP client's: httpx spends
about a millisecond of CPU per request more than grpc.aio does on the gRPC side, which
`--client httpx` shows. Several `--rest-url`s (e.g. two bridges, before and after a change)
are measured in the same interleaved rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import grpc
import httpx
from google.protobuf import json_format
from llama.v1 import completion_pb2, service_pb2_grpc

DEFAULT_REQUEST: dict[str, Any] = {
    "prompt": "The quick brown fox jumps over the lazy dog. Once upon a time",
    "n_predict": 128, "temperature": 0, "ignore_eos": True, "cache_prompt": False,
}


@dataclass(frozen=True)
class Timing:
    ttft_s: float  # request sent -> first generated text received
    total_s: float  # request sent -> stream ended
    pieces: int  # messages/events that carried generated text

    @property
    def per_token_s(self) -> float:
        """Time per text piece after the first (the steady streaming rate)."""
        return (self.total_s - self.ttft_s) / max(self.pieces - 1, 1)


def _median(ts: Sequence[Timing], attr: str) -> float:
    return float(statistics.median(float(getattr(t, attr)) for t in ts))


@dataclass(frozen=True)
class OverheadReport:
    grpc: tuple[Timing, ...]
    rest: tuple[Timing, ...]

    @property
    def ttft_added_ms(self) -> float:
        return 1e3 * (_median(self.rest, "ttft_s") - _median(self.grpc, "ttft_s"))

    @property
    def total_added_pct(self) -> float:
        direct = _median(self.grpc, "total_s")
        return 100.0 * (_median(self.rest, "total_s") - direct) / direct

    @property
    def per_token_ratio(self) -> float:
        """REST/gRPC of the median time per token after the first."""
        return _median(self.rest, "per_token_s") / _median(self.grpc, "per_token_s")

    def summary(self) -> str:
        def side(ts: Sequence[Timing]) -> str:
            return (f"ttft {1e3 * _median(ts, 'ttft_s'):.2f} ms, per token "
                    f"{1e3 * _median(ts, 'per_token_s'):.3f} ms, total "
                    f"{1e3 * _median(ts, 'total_s'):.1f} ms")
        return (f"runs={len(self.grpc)} grpc: {side(self.grpc)} | rest: {side(self.rest)} | "
                f"added: ttft {self.ttft_added_ms:+.2f} ms, per token x{self.per_token_ratio:.3f}"
                f", total {self.total_added_pct:+.2f}%")


async def _time_grpc(stub: Any, body: dict[str, Any], metadata: Sequence[tuple[str, str]]
                     ) -> Timing:
    req = json_format.ParseDict({**body, "stream": True}, completion_pb2.CompletionRequest(),
                                ignore_unknown_fields=True)
    t0 = time.perf_counter()
    first = None
    pieces = 0
    async for msg in stub.Completion(req, metadata=tuple(metadata)):
        if msg.content:
            pieces += 1
            if first is None:
                first = time.perf_counter()
    end = time.perf_counter()
    return Timing((first or end) - t0, end - t0, pieces)


def _is_text_event(line: bytes) -> bool:
    """Whether an SSE line is an event that carries generated text."""
    return line.startswith(b"data: {") and bool(json.loads(line[6:]).get("content"))


def _text_events(chunk: bytes) -> int:
    """How many SSE events in `chunk` carry generated text."""
    return sum(_is_text_event(line) for line in chunk.split(b"\n"))


async def _time_rest_httpx(client: httpx.AsyncClient, body: dict[str, Any]) -> Timing:
    t0 = time.perf_counter()
    first = None
    pieces = 0
    async with client.stream("POST", "/completion", json={**body, "stream": True}) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if _is_text_event(line.encode()):
                pieces += 1
                if first is None:
                    first = time.perf_counter()
    end = time.perf_counter()
    return Timing((first or end) - t0, end - t0, pieces)


class RawHttp:
    """A minimal HTTP/1.1 client for chunked streaming POSTs on one keep-alive connection."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http":
            raise ValueError(f"the raw client speaks plain http, not {url}: use httpx")
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._prefix = parts.path.rstrip("/")
        self._headers = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def close(self) -> None:
        if self._conn is not None:
            self._conn[1].close()
            self._conn = None

    async def time_completion(self, body: dict[str, Any]) -> Timing:
        if self._conn is None:
            self._conn = await asyncio.open_connection(self._host, self._port)
        reader, writer = self._conn
        data = json.dumps({**body, "stream": True}).encode()
        head = (f"POST {self._prefix}/completion HTTP/1.1\r\nHost: {self._host}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
                f"{self._headers}\r\n").encode()
        t0 = time.perf_counter()
        writer.write(head + data)
        status = (await reader.readuntil(b"\r\n\r\n")).split(b" ", 2)[1]
        if status != b"200":
            raise RuntimeError(f"HTTP {status.decode()} from the bridge")
        first = None
        pieces = 0
        while size := int((await reader.readline()).strip(), 16):
            n = _text_events(await reader.readexactly(size + 2))
            if n and first is None:
                first = time.perf_counter()
            pieces += n
        await reader.readline()  # the empty line after the last chunk
        end = time.perf_counter()
        return Timing((first or end) - t0, end - t0, pieces)


async def measure_overhead(grpc_target: str, rest_url: str,
                           request: dict[str, Any] | None = None, runs: int = 20,
                           api_key: str | None = None, warmup: int = 2,
                           client: str = "raw") -> OverheadReport:
    """Time `runs` streamed completions each way, alternating, after `warmup` of each."""
    return (await measure_many(grpc_target, [rest_url], request, runs, api_key, warmup,
                               client))[0]


async def measure_many(grpc_target: str, rest_urls: Sequence[str],
                       request: dict[str, Any] | None = None, runs: int = 20,
                       api_key: str | None = None, warmup: int = 2,
                       client: str = "raw") -> list[OverheadReport]:
    """As measure_overhead, for several bridges at once: each round times gRPC, then every
    bridge in turn, so all of them see the same conditions."""
    body = {**DEFAULT_REQUEST, **(request or {})}
    metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    grpc_times: list[Timing] = []
    rest_times: list[list[Timing]] = [[] for _ in rest_urls]
    async with grpc.aio.insecure_channel(grpc_target) as channel:
        stub = service_pb2_grpc.LlamaServerStub(channel)
        timers, closers = _rest_timers(rest_urls, headers, client)
        try:
            for i in range(warmup + runs):
                g = await _time_grpc(stub, body, metadata)
                rs = [await timer(body) for timer in timers]
                if i >= warmup:
                    grpc_times.append(g)
                    for times, r in zip(rest_times, rs, strict=True):
                        times.append(r)
        finally:
            for close in closers:
                await close()
    return [OverheadReport(tuple(grpc_times), tuple(ts)) for ts in rest_times]


Timer = Callable[[dict[str, Any]], Awaitable[Timing]]


def _rest_timers(urls: Sequence[str], headers: dict[str, str], client: str
                 ) -> tuple[list[Timer], list[Callable[[], Awaitable[None]]]]:
    if client == "httpx":
        clients = [httpx.AsyncClient(base_url=u, headers=headers, timeout=600) for u in urls]
        return ([functools.partial(_time_rest_httpx, c) for c in clients],
                [c.aclose for c in clients])
    raws = [RawHttp(u, headers) for u in urls]
    return [r.time_completion for r in raws], [r.close for r in raws]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rest_bridge.overhead", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grpc-target", required=True)
    p.add_argument("--rest-url", required=True, action="append",
                   help="the bridge's base URL; repeat to compare several bridges")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--n-predict", type=int, default=DEFAULT_REQUEST["n_predict"])
    p.add_argument("--client", choices=("raw", "httpx"), default="raw")
    p.add_argument("--api-key")
    args = p.parse_args(argv)
    reports = asyncio.run(measure_many(args.grpc_target, args.rest_url,
                                       {"n_predict": args.n_predict}, args.runs, args.api_key,
                                       client=args.client))
    for url, report in zip(args.rest_url, reports, strict=True):
        print(f"{url}: {report.summary()}" if len(reports) > 1 else report.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
