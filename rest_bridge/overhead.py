"""What the bridge adds to a generation: the same streamed /completion request sent to the gRPC
service directly and through the bridge, alternately, comparing time to first token and total
time (medians). A hook for the benchmarks, not a test: it asserts nothing.

    python -m rest_bridge.overhead --grpc-target 127.0.0.1:50051 --rest-url http://127.0.0.1:8080
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class OverheadReport:
    grpc: tuple[Timing, ...]
    rest: tuple[Timing, ...]

    @staticmethod
    def _median(ts: Sequence[Timing], attr: str) -> float:
        return float(statistics.median(float(getattr(t, attr)) for t in ts))

    @property
    def ttft_added_ms(self) -> float:
        return 1e3 * (self._median(self.rest, "ttft_s") - self._median(self.grpc, "ttft_s"))

    @property
    def total_added_pct(self) -> float:
        direct = self._median(self.grpc, "total_s")
        return 100.0 * (self._median(self.rest, "total_s") - direct) / direct

    def summary(self) -> str:
        return (f"runs={len(self.grpc)} grpc: ttft {1e3 * self._median(self.grpc, 'ttft_s'):.2f} "
                f"ms, total {1e3 * self._median(self.grpc, 'total_s'):.1f} ms | rest: ttft "
                f"{1e3 * self._median(self.rest, 'ttft_s'):.2f} ms, total "
                f"{1e3 * self._median(self.rest, 'total_s'):.1f} ms | added: ttft "
                f"{self.ttft_added_ms:+.2f} ms, total {self.total_added_pct:+.2f}%")


async def _time_grpc(stub: Any, body: dict[str, Any], metadata: Sequence[tuple[str, str]]
                     ) -> Timing:
    req = json_format.ParseDict({**body, "stream": True}, completion_pb2.CompletionRequest(),
                                ignore_unknown_fields=True)
    t0 = time.perf_counter()
    first = None
    async for msg in stub.Completion(req, metadata=tuple(metadata)):
        if first is None and msg.content:
            first = time.perf_counter()
    end = time.perf_counter()
    return Timing((first or end) - t0, end - t0)


async def _time_rest(client: httpx.AsyncClient, body: dict[str, Any]) -> Timing:
    t0 = time.perf_counter()
    first = None
    async with client.stream("POST", "/completion", json={**body, "stream": True}) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if first is None and line.startswith("data: ") and json.loads(line[6:])["content"]:
                first = time.perf_counter()
    end = time.perf_counter()
    return Timing((first or end) - t0, end - t0)


async def measure_overhead(grpc_target: str, rest_url: str,
                           request: dict[str, Any] | None = None, runs: int = 5,
                           api_key: str | None = None, warmup: int = 1) -> OverheadReport:
    """Time `runs` streamed completions each way, alternating, after `warmup` of each."""
    body = {**DEFAULT_REQUEST, **(request or {})}
    metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    grpc_times: list[Timing] = []
    rest_times: list[Timing] = []
    async with grpc.aio.insecure_channel(grpc_target) as channel, httpx.AsyncClient(
            base_url=rest_url, headers=headers, timeout=600) as client:
        stub = service_pb2_grpc.LlamaServerStub(channel)
        for i in range(warmup + runs):
            g = await _time_grpc(stub, body, metadata)
            r = await _time_rest(client, body)
            if i >= warmup:
                grpc_times.append(g)
                rest_times.append(r)
    return OverheadReport(tuple(grpc_times), tuple(rest_times))


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rest_bridge.overhead", description=__doc__)
    p.add_argument("--grpc-target", required=True)
    p.add_argument("--rest-url", required=True)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--n-predict", type=int, default=DEFAULT_REQUEST["n_predict"])
    p.add_argument("--api-key")
    args = p.parse_args(argv)
    report = asyncio.run(measure_overhead(args.grpc_target, args.rest_url,
                                          {"n_predict": args.n_predict}, args.runs,
                                          args.api_key))
    print(report.summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
