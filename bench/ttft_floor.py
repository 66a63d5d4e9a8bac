"""The part of the time to first token no server can avoid: the engine alone, in this process,
for the benchmark's two low-load first-token cases (a 32-token prompt in an idle slot, and 24
new tokens after a 1,000-token cached prefix). Printed next to the benchmark's TTFT figures it
says how much of them is llama.cpp and how much is server, transport and client.

    python -m bench.ttft_floor [--model M] [--gpu-layers 999] [--threads 4] [--runs 30]

Two layers, medians over --runs:
- native: decode the prompt (the cached prefix already in the slot) and sample its first
  token, our binding called directly; `decode` and `sample` are also shown apart (with CUDA,
  `llama_decode` only queues the work and the sampling's first logits lookup waits for it);
- engine: the service's Engine thread from `submit` to the first token's event (wake-up,
  admission and slot choice, sampler chain, the step, detokenizing, the hand-off).

It uses the libllama our cffi extension was last built against (after `python -m bench --cuda`:
the CUDA build the servers ran). Settings default to the benchmark's (`-c 16384 -np 8 -b 2048
-ub 512`, greedy).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import native  # noqa: F401 - loads libllama, before grpc (bench.clients): see native/__init__
from bench.clients import SEED
from bench.scenarios import PromptMaker, Sizes

T = TypeVar("T")
Case = tuple[str, int, int]  # name, cached prefix tokens, new tokens
CASES: tuple[Case, ...] = (("idle, 32-token prompt", 0, Sizes.short_prompt),
                           ("warm prefix, 1,000 cached + 24", Sizes.prefix, Sizes.suffix))


def _median_ms(values: Sequence[float]) -> float:
    return 1e3 * statistics.median(values)


def _measure(fn: Callable[[], T], runs: int) -> list[T]:
    for _ in range(3):  # kernel selection, allocations, graph capture
        fn()
    return [fn() for _ in range(runs)]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ttft_floor", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, help="GGUF (default: the generated bench model)")
    p.add_argument("--gpu-layers", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ctx", type=int, default=16384)
    p.add_argument("--parallel", type=int, default=8)
    p.add_argument("--runs", type=int, default=30)
    args = p.parse_args(argv)

    from native import Batch, Context, ContextParams, Model, ModelParams
    from native.sampler import sample_parallel
    from native.testmodels import ensure_model
    from service.engine.engine import Engine, EngineSettings
    from service.engine.events import Chunk, Event, Failed, Finished
    from service.engine.params import CompletionParams, SamplingParams
    from service.engine.sampling import build_chain
    from service.engine.task import Task

    path = args.model or ensure_model("bench")
    model = Model(path, ModelParams(n_gpu_layers=args.gpu_layers))
    ctx = Context(model, ContextParams(n_ctx=args.ctx, n_seq_max=args.parallel, n_batch=2048,
                                       n_ubatch=512, n_threads=args.threads,
                                       n_threads_batch=args.threads))
    # What a benchmark request asks for (greedy, fixed seed) on the server's defaults.
    sampling = replace(SamplingParams(), temperature=0.0, seed=SEED, repeat_penalty=1.0)
    pm = PromptMaker(SEED)
    batch = Batch(2048)

    def decode(tokens: Sequence[int], pos: int, seq: int) -> int:
        batch.clear()
        last = batch.add_sequence(list(tokens), pos, seq, True)
        ctx.decode(batch)
        return last

    def native_once(cached: int, new: int) -> tuple[float, float, float]:
        ctx.seq_rm(0)
        if cached:
            decode(pm.unique(cached), 0, 0)
            prime = build_chain(model.vocab, sampling)
            sample_parallel(ctx, [(prime, batch.n_tokens - 1)], 1)
            prime.close()
        chain = build_chain(model.vocab, sampling)
        t0 = time.perf_counter()
        idx = decode(pm.unique(new), cached, 0)
        t1 = time.perf_counter()
        sample_parallel(ctx, [(chain, idx)], 1)
        t2 = time.perf_counter()
        chain.close()
        return t2 - t0, t1 - t0, t2 - t1

    engine = Engine(model, ctx, EngineSettings(sampling_threads=1))

    def engine_once(cached: int, new: int) -> float:
        shared = pm.unique(cached) if cached else ()
        params = CompletionParams(n_predict=1, ignore_eos=True, sampling=sampling)
        if cached:
            run_task([*shared, *pm.unique(new)], params)
        return run_task([*shared, *pm.unique(new)], params)

    def run_task(prompt: list[int], params: CompletionParams) -> float:
        """Seconds from submit to the task's first event."""
        first = threading.Event()
        t_first = [0.0]

        def sink(events: list[Event]) -> None:
            if not first.is_set() and any(isinstance(e, Chunk | Finished | Failed)
                                          for e in events):
                t_first[0] = time.perf_counter()
                first.set()

        t0 = time.perf_counter()
        engine.submit(Task("ttft", prompt, params, sink))
        if not first.wait(60):
            raise RuntimeError("the engine sent nothing within 60 s")
        return t_first[0] - t0

    print(f"model {path.name}; -ngl {args.gpu_layers} -t {args.threads} -c {args.ctx} "
          f"-np {args.parallel}; {args.runs} runs, medians")
    for name, cached, new in CASES:
        samples = _measure(functools.partial(native_once, cached, new), args.runs)
        total, dec, samp = (_median_ms([s[i] for s in samples]) for i in range(3))
        print(f"{name}: native {total:.2f} ms (decode call {dec:.2f}, sample {samp:.2f})")
    ctx.memory_clear()
    engine.start()
    try:
        for name, cached, new in CASES:
            ms = _median_ms(_measure(functools.partial(engine_once, cached, new), args.runs))
            print(f"{name}: engine {ms:.2f} ms")
    finally:
        engine.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
