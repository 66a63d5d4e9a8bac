"""`python -m bench`: llama-grpc (gRPC, REST bridge, REST through Envoy) against llama-server,
in one run.

    python -m bench                 # CPU: builds llama-server (cached), runs every scenario
    python -m bench --cuda          # GPU: CUDA builds, all layers offloaded, plus 32/64 streams
    python -m bench --cuda --models bench,1b,8b --wide-concurrency 64,128,256 --wide-parallel 0
                                    # several models in one run, a phase per stream count

Steps: build llama-server and llama-batched-bench from the pinned llama.cpp source (cached),
make sure our cffi extension is current, generate (or reuse) the bench model, run
llama-batched-bench, then start both servers with the same flags and run every scenario against
every path, interleaved. Writes results.json (every sample), results.md (the tables) and
aggregate.png into --out, and prints the tables.
"""

from __future__ import annotations

import argparse
import datetime
import faulthandler
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from native import paths

# The generated llama.v1 package lives in gen/python; make it importable for this process and
# for the client worker processes (which inherit sys.path), so that one command is enough.
_GEN = str(paths.REPO_ROOT / "gen" / "python")
if _GEN not in sys.path:
    sys.path.insert(0, _GEN)

from bench import report  # noqa: E402 - after the sys.path fix-up above
from bench.batched_bench import BatchedPoint, run_batched_bench  # noqa: E402
from bench.load import LoadRunner  # noqa: E402
from bench.machine import machine_info  # noqa: E402
from bench.output import (  # noqa: E402
    ModelPanel,
    plot_title,
    write_combined,
    write_outputs,
)
from bench.runner import PhaseResult, run_phase, say  # noqa: E402
from bench.scenarios import (  # noqa: E402
    Scenario,
    Sizes,
    aggregate,
    aggregate_streams,
    main_scenarios,
)
from bench.servers import ServerSettings  # noqa: E402
from native.testmodels import MODEL_NAMES  # noqa: E402


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _names(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [n for n in names if n not in MODEL_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown model(s) {', '.join(unknown) or '(none)'}; "
                                         f"known: {', '.join(MODEL_NAMES)}")
    return names


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--cuda", action="store_true",
                   help="build both with CUDA (sm_90) and offload every layer")
    p.add_argument("--reps", type=int, help="runs of each scenario per path (default 3; 5 GPU)")
    p.add_argument("--parallel", type=int, default=8, help="--parallel of the main phase")
    p.add_argument("--concurrency", type=_ints, default=[1, 2, 4, 8, 16],
                   help="stream counts of the aggregate scenarios (default 1,2,4,8,16)")
    p.add_argument("--wide-parallel", type=int, default=64,
                   help="--parallel of the wide phase; 0: one phase per stream count N at "
                   "--parallel N")
    p.add_argument("--wide-concurrency", type=_ints,
                   help="stream counts of the wide phase(s) (default 16,32,64 with --cuda, "
                   "none on CPU; empty string: no wide phase)")
    p.add_argument("--wide-ctx-per-slot", type=int,
                   help="context per slot in the wide phases (default --ctx-per-slot; the "
                   "aggregate requests need 32 + their tokens; an 8B model's cache at 256 slots "
                   "x 2048 would not fit three servers on one GPU)")
    p.add_argument("--models", type=_names, default=["bench"],
                   help="native.testmodels names measured one after another, each with every "
                   f"phase (default bench; e.g. bench,1b,8b; known: {', '.join(MODEL_NAMES)})")
    p.add_argument("--no-backend-sampling", action="store_true",
                   help="no second llama-server with --backend-sampling (-bs)")
    p.add_argument("--server-args", default=os.environ.get("BENCH_SERVER_ARGS", ""),
                   help="more llama-server flags for both servers, one string of shell words "
                   "(default: $BENCH_SERVER_ARGS)")
    p.add_argument("--ctx-per-slot", type=int, default=2048, help="context = this x --parallel")
    p.add_argument("--threads", type=int,
                   help="-t/-tb for both (default: usable CPUs - 1, at least 1; 4 GPU)")
    p.add_argument("--client-procs", type=int,
                   help="client worker processes (default 1; 4 GPU)")
    p.add_argument("--model", type=Path, help="a GGUF to serve instead of --models")
    p.add_argument("--scenarios", help="comma-separated scenario ids to run (single, prompt, "
                   "aggregate_N, ttft_idle, ttft_load, prefix; default all)")
    p.add_argument("--gen-tokens", type=int, default=128, help="single-stream tokens")
    p.add_argument("--aggregate-tokens", type=int,
                   help="tokens per stream in the aggregate scenarios (default 64 CPU, 128 GPU)")
    p.add_argument("--ttft-requests", type=int, default=10,
                   help="idle time-to-first-token requests per run")
    p.add_argument("--load-requests", type=int, default=3,
                   help="requests per lane and run under 8-stream load")
    p.add_argument("--no-llama-server", action="store_true",
                   help="ours only: do not build or run llama-server (no ratios)")
    p.add_argument("--no-bridge", action="store_true", help="skip the REST bridge path")
    p.add_argument("--no-envoy", action="store_true",
                   help="skip the REST-through-Envoy path (bench/envoy_path.py)")
    p.add_argument("--no-batched-bench", action="store_true")
    p.add_argument("--profile", type=float, default=0.0, metavar="SECONDS",
                   help="after each phase, py-spy our server for SECONDS per path under the "
                   "busiest aggregate scenario (profile-*.txt in --out)")
    p.add_argument("--step-timeline", action="store_true",
                   help="our server records its step timeline (LLAMA_GRPC_STEP_TIMELINE): "
                   "results.md gets a table of host work against decode per step for each "
                   "aggregate scenario (bench/timeline_table.py)")
    p.add_argument("--profile-gil", action="store_true",
                   help="profile only the thread holding the GIL (py-spy --gil)")
    p.add_argument("--embeddings-only", action="store_true",
                   help="run only the embedding and rerank scenarios (bench/embeddings.py)")
    p.add_argument("--no-embeddings", action="store_true",
                   help="skip the embedding and rerank scenarios")
    p.add_argument("--chat-parsing", action="store_true",
                   help="also run the chat parsing A/B and n: 4 scenarios at the end "
                   "(bench/chat_parsing.py; ours only)")
    p.add_argument("--chat-parsing-only", action="store_true",
                   help="run only the chat parsing A/B and n: 4 scenarios")
    p.add_argument("--scrape-overhead", action="store_true",
                   help="also run bench/scrape_overhead.py at the end: 8 streams with and "
                   "without /metrics and /slots scraped every 100 ms (issue 19)")
    p.add_argument("--infill", action="store_true",
                   help="also run the /infill scenario at the end (bench/infill.py)")
    p.add_argument("--speculative", action="store_true",
                   help="also run the speculative decoding scenarios at the end "
                   "(bench/speculative.py)")
    p.add_argument("--infill-only", action="store_true",
                   help="run only /infill (with --speculative-only: only those two)")
    p.add_argument("--speculative-only", action="store_true",
                   help="run only the speculative decoding scenarios (with --infill-only: only "
                   "those two)")
    p.add_argument("--spec-target", default="tiny-bpe",
                   help="speculative target: a native.testmodels name or a GGUF path")
    p.add_argument("--spec-draft", default="tiny-bpe-draft",
                   help="the disagreeing draft (its vocabulary must be the target's)")
    p.add_argument("--spec-tokens", type=int, help="tokens per speculative request "
                   "(default 64; 128 GPU)")
    p.add_argument("--spec-draft-max", type=int, default=8,
                   help="--spec-draft-n-max of the draft scenarios")
    p.add_argument("--spec-ours-ngram", help="our n-gram speculation flags, one string of shell "
                   "words, where they differ from llama-server's")
    p.add_argument("--prepare-only", action="store_true",
                   help="build, compile and generate the model, then stop")
    p.add_argument("--out", type=Path, help="results directory (default: "
                   "<cache>/bench-results/<date-time>)")
    return p.parse_args(argv)


def _merged_headers(root: Path) -> Path:
    """llama.h and the ggml headers it includes, in one directory (as an install would have)."""
    import shutil

    dest = root / "include"
    dest.mkdir(exist_ok=True)
    src = paths.source_dir()
    for header in [*(src / "include").glob("*.h"), *(src / "ggml" / "include").glob("*.h")]:
        shutil.copy2(header, dest / header.name)
    return dest


def _prepare_binaries(args: argparse.Namespace) -> tuple[Path | None, Path | None]:
    """Build llama-server (unless skipped) and make our extension current; with --cuda both
    use the one CUDA build tree, so the library is the same, byte for byte."""
    from native import cffi_build

    server_bin = batched_bin = None
    if not args.no_llama_server or args.cuda:
        from bench.llama_build import ensure_server_build

        build = ensure_server_build(cuda=args.cuda)
        server_bin, batched_bin = build.llama_server, build.batched_bench
        if args.cuda:
            os.environ["LLAMA_GRPC_LIB_DIR"] = str(build.libllama_dir)
            os.environ["LLAMA_GRPC_INCLUDE_DIR"] = str(_merged_headers(build.root))
    if args.no_llama_server:
        server_bin = batched_bin = None
    compiled = cffi_build.ensure_extension(cuda=args.cuda)
    if compiled:
        say(f"compiled {compiled}")
    return server_bin, batched_bin


def _settings(args: argparse.Namespace, model: Path, parallel: int,
              ctx_per_slot: int | None = None) -> ServerSettings:
    # One CPU stays free for the servers' own I/O threads and the client: ggml's threads wait
    # for each other at every barrier, and one of them descheduled stalls them all (on 2
    # shared cores, -t 2 ran 20-200x slower than -t 1 in llama-batched-bench).
    usable = len(os.sched_getaffinity(0))
    threads = args.threads or (min(4, usable) if args.cuda else max(1, usable - 1))
    per_slot = ctx_per_slot or args.ctx_per_slot
    return ServerSettings(model=model, ctx=parallel * per_slot, parallel=parallel,
                          threads=threads, gpu_layers=999 if args.cuda else 0,
                          extra=tuple(shlex.split(args.server_args)))


@dataclass(frozen=True)
class Phase:
    """One server setting and the scenarios run at it."""

    name: str
    settings: ServerSettings
    scenarios: list[Scenario]


def _select(scenarios: list[Scenario], names: str | None) -> list[Scenario]:
    if not names:
        return scenarios
    wanted = {n.strip() for n in names.split(",")}
    return [s for s in scenarios if s.name in wanted]


def _batched(binary: Path | None, args: argparse.Namespace, settings: ServerSettings,
             streams: list[int], sizes: Sizes, out: Path) -> dict[int, BatchedPoint]:
    if binary is None or args.no_batched_bench or not streams:
        return {}
    say(f"llama-batched-bench at {streams}")
    points = run_batched_bench(binary, settings, streams, sizes.short_prompt, sizes.agg_tokens,
                               out / "batched-bench.log")
    return {p.streams: p for p in points}


def _plan(args: argparse.Namespace, model: Path) -> list[Phase]:
    phases = [Phase(f"np{args.parallel}", _settings(args, model, args.parallel),
                    _select(main_scenarios(args.concurrency, args.parallel), args.scenarios))]
    wide = args.wide_concurrency if args.wide_concurrency is not None else (
        [16, 32, 64] if args.cuda else [])
    per_slot = args.wide_ctx_per_slot
    if args.wide_parallel == 0:  # matched: N streams at --parallel N
        phases += [Phase(f"np{n}", _settings(args, model, n, per_slot),
                         _select([aggregate(n)], args.scenarios)) for n in wide]
    elif wide:
        phases.append(Phase(f"np{args.wide_parallel}",
                            _settings(args, model, args.wide_parallel, per_slot),
                            _select([aggregate(n) for n in wide], args.scenarios)))
    return phases


@dataclass
class ModelRun:
    """One model measured: its name, file, how long generating it took (None: cached)."""

    name: str
    path: Path
    generated_s: float | None = None


def _models(args: argparse.Namespace) -> list[ModelRun]:
    """The models to measure, generated first where not cached (timed: issue 26 asks)."""
    if args.model:
        return [ModelRun(args.model.stem, args.model)]
    from native.testmodels import ensure_model, model_path

    runs = []
    for name in args.models:
        cached = model_path(name).is_file()
        t0 = time.monotonic()
        path = ensure_model(name)
        took = None if cached else round(time.monotonic() - t0, 1)
        if took is not None:
            say(f"generated {name}: {path.stat().st_size / 1e9:.2f} GB in {took:.1f}s")
        runs.append(ModelRun(name, path, took))
    return runs


def _run_model(args: argparse.Namespace, argv: list[str] | None, run: ModelRun,
               binaries: tuple[Path | None, Path | None], reps: int,
               out: Path) -> tuple[str, list[report.Row], dict[int, BatchedPoint], bool] | None:
    """Every phase on one model; its outputs go to `out`. None when no scenario is selected."""
    server_bin, batched_bin = binaries
    started = time.monotonic()
    agg_tokens = args.aggregate_tokens or (128 if args.cuda else 64)
    sizes = Sizes(gen_tokens=args.gen_tokens, agg_tokens=agg_tokens,
                  ttft_requests=args.ttft_requests,
                  load_requests=args.load_requests, load_lanes=args.parallel)
    plan = [p for p in _plan(args, run.path) if p.scenarios]
    if not plan:
        return None
    streams = sorted({min(sc.streams, p.settings.parallel) for p in plan for sc in p.scenarios
                      if aggregate_streams(sc.name) is not None})
    batched_settings = max((p.settings for p in plan), key=lambda st: st.parallel)
    batched = _batched(batched_bin, args, batched_settings, streams, sizes, out)
    runner = LoadRunner(args.client_procs or (4 if args.cuda else 1))
    runner.warm_up()
    phases: list[PhaseResult] = []
    try:
        for p in plan:
            say(f"{run.name}, phase {p.name}: {len(p.scenarios)} scenarios x {reps} runs per "
                "path")
            phases.append(run_phase(p.name, p.settings, p.scenarios, sizes, reps, server_bin,
                                    not args.no_bridge, runner, out, args.profile,
                                    args.profile_gil, envoy=not args.no_envoy,
                                    backend_sampling=not args.no_backend_sampling,
                                    step_timeline=args.step_timeline))
    finally:
        runner.close()
    generated = "" if run.generated_s is None else f"; generated in {run.generated_s}s"
    meta = {
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "command": "python -m bench " + shlex.join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_info(plan[0].settings.threads),
        "settings": f"{plan[0].settings.flags()[2:]} (model {run.name}: {run.path.name}, "
                    f"{run.path.stat().st_size / 1e6:,.0f} MB{generated}); reps {reps}; "
                    f"client processes {runner.procs}; sizes {asdict(sizes)}",
        "elapsed_s": round(time.monotonic() - started, 1),
    }
    rows = [r for p, ph in zip(plan, phases, strict=True)
            for r in report.summarize(ph, p.scenarios)]
    markdown = write_outputs(out, meta, rows, phases, batched)
    return markdown, rows, batched, any(ph.errors for ph in phases)


def main(argv: list[str] | None = None) -> int:
    # A crash in native code (one GPU run died with SIGSEGV while plotting, after results.json
    # was written) then leaves the Python stack in the log.
    faulthandler.enable()
    args = parse_args(argv)
    started = time.monotonic()
    reps = args.reps or (5 if args.cuda else 3)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out: Path = args.out or paths.cache_root() / "bench-results" / stamp
    out.mkdir(parents=True, exist_ok=True)
    server_bin, batched_bin = _prepare_binaries(args)
    models = _models(args)
    model = models[0].path
    if args.prepare_only:
        say(f"prepared: llama-server {server_bin}, models {[str(m.path) for m in models]}")
        return 0
    if args.embeddings_only:
        return _embeddings(args, server_bin, reps, out)
    if args.chat_parsing_only:
        return _chat_parsing(args, model, out)
    if args.infill_only or args.speculative_only:
        return _issue20(args, server_bin, reps, out, args.infill_only, args.speculative_only)
    failed, panels = False, []
    for run in models:
        # One model: its files in --out itself, as before; several: a folder each.
        model_out = out if len(models) == 1 else out / run.name
        model_out.mkdir(parents=True, exist_ok=True)
        done = _run_model(args, argv, run, (server_bin, batched_bin), reps, model_out)
        if done is None:
            say(f"no scenario is named {args.scenarios!r} (see --help)")
            return 2
        markdown, rows, batched, errors = done
        print(markdown)
        failed = failed or errors
        panels.append(ModelPanel(run.name, markdown, rows, batched))
    if len(models) > 1:
        threads = _settings(args, model, args.parallel).threads
        write_combined(out, panels, plot_title(machine_info(threads)))
    if not args.no_embeddings:
        failed = _embeddings(args, server_bin, reps, out) != 0 or failed
    if args.chat_parsing:
        failed = _chat_parsing(args, model, out) != 0 or failed
    if args.scrape_overhead:
        _scrape_overhead(args, model, reps, out)
    if args.infill or args.speculative:
        failed = _issue20(args, server_bin, reps, out, args.infill, args.speculative) != 0 or \
            failed
    say(f"results in {out} ({time.monotonic() - started:.0f}s)")
    return 1 if failed else 0


def _embeddings(args: argparse.Namespace, server_bin: Path | None, reps: int, out: Path) -> int:
    """The embedding and rerank scenarios (bench/embeddings.py), with the main phase's threads
    and offload; their table goes to results.md."""
    from bench.embeddings import run_embedding_bench, write_results

    settings = _settings(args, Path(), 4)
    result = run_embedding_bench(server_bin, settings.threads, settings.gpu_layers, reps,
                                 not args.no_bridge, out, settings.extra)
    print(write_results(result, out))
    for error in result.errors:
        say(error)
    return 1 if result.errors else 0


def _scrape_overhead(args: argparse.Namespace, model: Path, reps: int, out: Path) -> None:
    """What monitoring costs (bench/scrape_overhead.py), on our service alone with the main
    phase's threads and offload; written to scrape-overhead.txt."""
    from bench.scrape_overhead import measure

    s = _settings(args, model, 8)
    extra = ["-ngl", str(s.gpu_layers)] if s.gpu_layers else []
    text = measure(model, 8, 128 if args.cuda else 64, max(reps, 5), s.threads,
                   [*extra, *s.extra])
    (out / "scrape-overhead.txt").write_text(text + "\n")
    print(text)


def _chat_parsing(args: argparse.Namespace, model: Path, out: Path) -> int:
    """Tool-call parsing's cost (A/B) and n: 4's timings (bench/chat_parsing.py), on our service
    alone with the main phase's threads; written to chat-parsing.txt."""
    from bench.chat_parsing import measure

    threads = str(_settings(args, model, 4).threads)
    text = measure(model, args.gen_tokens, max(args.reps or 8, 4), 150,
                   ("-t", threads, "-tb", threads))
    (out / "chat-parsing.txt").write_text(text + "\n")
    print(text)
    return 0


def _issue20(args: argparse.Namespace, server_bin: Path | None, reps: int, out: Path,
             infill: bool, speculative: bool) -> int:
    """/infill (bench/infill.py) and speculative decoding (bench/speculative.py), ours through
    the REST bridge against llama-server, with the main phase's threads and offload."""
    from bench import infill as infill_bench
    from bench import speculative as spec_bench

    s = _settings(args, Path(), 1)
    failed = 0
    if infill:
        failed |= infill_bench.run(server_bin, s.threads, s.gpu_layers, s.extra, reps, out)
    if speculative:
        ngram = shlex.split(args.spec_ours_ngram) if args.spec_ours_ngram is not None else None
        failed |= spec_bench.run(server_bin, s.threads, s.gpu_layers, s.extra, reps, out,
                                 args.spec_target, args.spec_draft,
                                 args.spec_tokens or (128 if args.cuda else 64),
                                 args.spec_draft_max, ngram)
    return failed


if __name__ == "__main__":
    raise SystemExit(main())
