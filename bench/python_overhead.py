"""The Python around llama.cpp, measured alone: our server with `llama_decode` and sampling
replaced by no-ops, N concurrent streams through gRPC. What is left is the engine's bookkeeping,
the event loop, gRPC and their contention for the GIL; on a GPU these set how close the service
gets to llama-batched-bench. Compare two checkouts on the same machine:

    python -m bench.python_overhead                       # this checkout
    python -m bench.python_overhead --tree /path/to/other # another one (its gen/ and cffi built)

Prints tokens/s (median of --reps) and tokens per decode (how many streams each step batched).
Found with it: sampler chains built on the event loop cut 64 streams to 1.8 tokens a decode,
against 12-42 when the engine builds them (docs/benchmarks.md, "Issue 15").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from google.protobuf import struct_pb2
from llama.v1 import completion_pb2, service_pb2_grpc

from bench.servers import free_port
from native import paths
from native.testmodels import ensure_model

_SERVE = """
import importlib, sys
import native
native.Context.decode = lambda self, batch: None
for name in ("service.engine.engine", "service.engine.executor"):
    try:
        module = importlib.import_module(name)
    except ImportError:
        continue
    if hasattr(module, "sample_parallel"):
        module.sample_parallel = lambda ctx, work, n: [1000] * len(work)
import service.engine.engine as engine
stop = engine.Engine.stop
def report(self, *args, **kwargs):
    s = self.stats
    print(f"ENGINE decodes={s.n_decode_total} tokens={s.tokens_predicted_total}",
          file=sys.stderr, flush=True)
    return stop(self, *args, **kwargs)
engine.Engine.stop = report
from service.cli import main
sys.exit(main(sys.argv[1:]))
"""


async def _stream(stub: service_pb2_grpc.LlamaServerStub, first: int, n_predict: int) -> int:
    req = completion_pb2.CompletionRequest(stream=True, n_predict=n_predict, ignore_eos=True,
                                           temperature=0.0)
    req.prompt.list_value.values.extend(
        struct_pb2.Value(number_value=(first + j) % 120_000) for j in range(32))
    n = 0
    async for msg in stub.Completion(req):
        n += len(msg.tokens)
    return n


async def _drive(address: str, streams: int, n_predict: int, reps: int) -> list[float]:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = service_pb2_grpc.LlamaServerStub(channel)
        await _stream(stub, 0, 4)
        rates = []
        for rep in range(reps):
            t0 = time.perf_counter()
            counts = await asyncio.gather(*(_stream(stub, 1000 + (rep * streams + i) * 40,
                                                    n_predict) for i in range(streams)))
            rates.append(sum(counts) / (time.perf_counter() - t0))
        return rates


def measure(tree: Path, model: Path, streams: int, n_predict: int, reps: int) -> str:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{tree / 'gen' / 'python'}"}
    cmd = [sys.executable, "-c", _SERVE, "-m", str(model), "-c", str(2048 * streams),
           "-np", str(streams), "-t", "1", "-tb", "1", "--grpc-port", str(port),
           "--host", "127.0.0.1", "--port", str(free_port())]
    log = Path(tempfile.gettempdir()) / f"python-overhead-{port}.log"
    with log.open("w") as out:
        server = subprocess.Popen(cmd, cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "model loaded" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        rates = asyncio.run(_drive(f"127.0.0.1:{port}", streams, n_predict, reps))
    finally:
        server.terminate()
        server.wait(60)
    found = re.search(r"ENGINE decodes=(\d+) tokens=(\d+)", log.read_text())
    per_decode = f"{int(found[2]) / int(found[1]):.1f}" if found else "?"
    return (f"{tree}: {streams} streams, {statistics.median(rates):,.0f} tok/s median "
            f"(runs: {', '.join(f'{r:,.0f}' for r in sorted(rates))}); "
            f"{per_decode} tokens a decode")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tree", type=Path, default=paths.REPO_ROOT)
    p.add_argument("--model", type=Path, help="default: the generated bench model")
    p.add_argument("--streams", type=int, default=64)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--reps", type=int, default=8)
    args = p.parse_args(argv)
    model = args.model or ensure_model("bench")
    print(measure(args.tree.resolve(), model, args.streams, args.tokens, args.reps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
