"""Speculative decoding scenarios of `python -m bench` (issue 20): ours (through the REST bridge)
against llama-server, both started with the same flags, in one run.

Target: `tiny-bpe` (native.testmodels; `--spec-target` names another, e.g. `bench`). One request
at a time, greedy, `ignore_eos`, `cache_prompt: false`, a fresh prompt each run:

- `no speculation, plain`: 32 random token ids, no draft: the single stream the draft rows are
  held to;
- `draft = target`: `-md` the target itself (the same weights: the upper bound of acceptance;
  the draft costs as much as the target);
- `cheap agreeing draft` and its `no speculation` twin, on their own target: `spm-deep`, which
  is `spm-deep-draft`'s two layers plus 22 inert ones (native.testmodels), so the draft agrees
  token for token (greedy) at a fraction of the target's cost per token: what a well-matched
  small draft gives, on any machine;
- `disagreeing draft`: `-md` a draft with the target's vocabulary and other weights (default
  `tiny-bpe-draft`, tiny-bpe's first layer alone: llama-server accepts well under 1% of its
  tokens): the lower bound, what drafting costs for nothing;
- `n-gram, repetitive` and its `no speculation` twin: draft-free speculation (llama-server's
  `--spec-type ngram-simple`: the tokens that followed the last n-gram's previous occurrence in
  the context are the draft) on a prompt of one line repeated, with a grammar that makes the
  answer go on repeating it (a random model repeats nothing by itself: on random or
  repeated-block prompts no n-gram draft was accepted). The grammar lets the model split the
  line into tokens in several ways, so not every draft is accepted even so. A second pair of
  rows raises the line's tokens by a logit bias of 30 instead of the grammar: the answer keeps
  to those few tokens and repeats itself often enough that some n-gram drafts are accepted, on
  both servers (from before ours speculated under a grammar; kept as the grammar-free case).

Both servers get `--spec-type draft-simple` and `--spec-draft-n-max/--spec-draft-n-min/
--spec-draft-p-min` with a draft (the pinned llama-server loads `-md` alone without drafting
with it; p-min 0, the pinned default, given so that both draft alike).
Reported per scenario and server: decode tokens/s (timings.predicted_n / predicted_ms), end to
end tokens/s, acceptance (timings.draft_n_accepted / draft_n, where the server reports them),
whether each output is token-for-token the non-speculative one, ours / llama-server, and each
server against its own non-speculative single stream (issue 20's ≥ 1.5x target, GPU); and the
server's CPU time a generated token (every thread of its processes, ours with the REST bridge's:
/proc/PID/task/TID/schedstat over the request), which a loaded machine moves far less than the
wall-clock rates. A server
that will not start with a scenario's flags is reported as skipped, with its log's reason.

    python -m bench --speculative-only          # CPU
    python -m bench --speculative-only --cuda   # GPU: both models fully offloaded (-ngl, -ngld)
"""

from __future__ import annotations

import json
import os
import random
import shlex
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from bench.runner import say
from bench.servers import (
    ServerProcess,
    ServerSettings,
    _children,
    start_llama_server,
    start_our_service,
)

OURS, THEIRS = "ours (bridge)", "llama-server"
PLAIN, REPETITIVE, BIASED = "plain", "repetitive", "repetitive, logit bias"
DEEP = "plain, spm-deep"  # random ids, on the cheap agreeing draft's own target
DEEP_TARGET, DEEP_DRAFT = "spm-deep", "spm-deep-draft"
LINE = "x = x + 1\n"
GRAMMAR = 'root ::= ("x = x + 1\\n")+'
BASELINE = "no speculation"
VOCAB_RANGE = (1000, 100_000)  # ordinary tokens of Llama 3's vocabulary (no specials)
SPM_RANGE = (1000, 32_000)  # and of Llama 2's (spm-deep)


@dataclass(frozen=True)
class SpecScenario:
    name: str
    prompt: str  # PLAIN, DEEP, REPETITIVE or BIASED
    flags: tuple[str, ...] = ()  # llama-server's spelling, given to both servers
    ours_flags: tuple[str, ...] | None = None  # ours, when it spells them otherwise
    target: Path | None = None  # the servers' model, when not the run's target

    @property
    def speculative(self) -> bool:
        return bool(self.flags)


@dataclass(frozen=True)
class SpecSample:
    scenario: str
    server: str
    rep: int
    decode_tps: float
    e2e_tps: float
    predicted_n: int
    draft_n: int  # -1: not reported
    draft_accepted: int
    content: str
    cpu_s: float = -1.0  # the server's CPU time over the request (-1: not measured)


@dataclass
class SpecResult:
    samples: list[SpecSample] = field(default_factory=list)
    skipped: dict[tuple[str, str], str] = field(default_factory=dict)  # (scenario, server)
    errors: list[str] = field(default_factory=list)


def draft_flags(draft: Path, n_max: int, gpu: bool) -> tuple[str, ...]:
    flags = ("-md", str(draft), "--spec-type", "draft-simple", "--spec-draft-n-max", str(n_max),
             "--spec-draft-n-min", "0", "--spec-draft-p-min", "0")
    return (*flags, "-ngld", "999") if gpu else flags


NGRAM_FLAGS = ("--spec-type", "ngram-simple", "--spec-ngram-simple-size-n", "3",
               "--spec-ngram-simple-size-m", "8")


def scenarios(target: Path, disagreeing: Path, n_max: int, gpu: bool,
              ours_ngram: Sequence[str] | None = None,
              deep: tuple[Path, Path] | None = None) -> list[SpecScenario]:
    """The plan; `deep` (spm-deep and spm-deep-draft) adds the cheap agreeing draft's pair."""
    ngram = SpecScenario("n-gram", REPETITIVE, NGRAM_FLAGS,
                         tuple(ours_ngram) if ours_ngram is not None else None)
    cheap = [] if deep is None else [
        SpecScenario(BASELINE, DEEP, target=deep[0]),
        SpecScenario("cheap agreeing draft", DEEP, draft_flags(deep[1], n_max, gpu),
                     target=deep[0])]
    return [SpecScenario(BASELINE, PLAIN),
            SpecScenario("draft = target", PLAIN, draft_flags(target, n_max, gpu)),
            *cheap,
            SpecScenario("disagreeing draft", PLAIN, draft_flags(disagreeing, n_max, gpu)),
            SpecScenario(BASELINE, REPETITIVE), ngram,
            SpecScenario(BASELINE, BIASED), replace(ngram, prompt=BIASED)]


def request(kind: str, rep: int, n_predict: int) -> dict[str, Any]:
    """Run `rep`'s request: 32 random token ids, or (repetitive) one line 16 times with a
    grammar that keeps repeating it, or (biased) with its tokens' logits raised by 30."""
    body: dict[str, Any] = {"n_predict": n_predict, "temperature": 0.0, "ignore_eos": True,
                            "seed": 1234, "cache_prompt": False, "stream": False}
    if kind in (PLAIN, DEEP):
        rng = random.Random(f"{kind}-{rep}")
        ids = VOCAB_RANGE if kind == PLAIN else SPM_RANGE
        return {**body, "prompt": [rng.randrange(*ids) for _ in range(32)]}
    body["prompt"] = f"# run {rep}\n" + LINE * 16
    if kind == BIASED:
        return {**body, "logit_bias": [[LINE, 30]]}
    return {**body, "grammar": GRAMMAR}


def complete(client: httpx.Client, url: str, req: dict[str, Any]) -> tuple[
        dict[str, Any], float]:
    """One non-streamed completion: (the response, wall seconds)."""
    for attempt in (1, 2):
        t0 = time.perf_counter()
        try:
            r = client.post(url + "/completion", json=req)
        except httpx.RemoteProtocolError:
            # A kept-alive connection closed by the server just as it was reused: nothing was
            # processed; send again.
            if attempt == 2:
                raise
            continue
        wall = time.perf_counter() - t0
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:300]}")
        return r.json(), wall
    raise AssertionError("unreachable")


def server_cpu_s(pid: int) -> float:
    """CPU seconds so far of every thread of `pid` and its children (threads that ended are
    not counted: the servers' threads live as long as they do)."""
    total = 0
    for p in (pid, *_children(pid)):
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{p}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total / 1e9


def sample(sc: SpecScenario, server: str, rep: int, resp: dict[str, Any],
           wall: float, cpu_s: float = -1.0) -> SpecSample:
    t = resp.get("timings") or {}
    n = int(t.get("predicted_n", 0))
    ms = float(t.get("predicted_ms", 0.0))
    return SpecSample(f"{sc.name}, {sc.prompt}", server, rep, n * 1e3 / ms if ms else 0.0,
                      n / wall if wall else 0.0, n, int(t.get("draft_n", -1)),
                      int(t.get("draft_n_accepted", -1)), str(resp.get("content", "")), cpu_s)


def _start(sc: SpecScenario, base: ServerSettings, server_bin: Path | None, ours: bool,
           out: Path, result: SpecResult) -> tuple[dict[str, str], list[Callable[[], None]],
                                                   dict[str, int]]:
    """The servers' URLs, stops and process ids, by server."""
    urls: dict[str, str] = {}
    pids: dict[str, int] = {}
    stops: list[Callable[[], None]] = []
    key = f"{sc.name}, {sc.prompt}"
    if sc.target is not None:
        base = replace(base, model=sc.target)
    if ours:
        flags = sc.flags if sc.ours_flags is None else sc.ours_flags
        try:
            svc = start_our_service(replace(base, extra=(*base.extra, *flags)), out, bridge=True)
            stops.append(svc.server.stop)
            pids[OURS] = _pid(svc.server)
            if svc.rest_url:
                urls[OURS] = svc.rest_url
            else:
                result.skipped[(key, OURS)] = svc.rest_skip_reason
        except (RuntimeError, TimeoutError) as e:
            result.skipped[(key, OURS)] = _reason(str(e))
    if server_bin is not None:
        try:
            proc, url = start_llama_server(server_bin, replace(base, extra=(*base.extra,
                                                                              *sc.flags)), out)
            stops.append(proc.stop)
            pids[THEIRS] = _pid(proc)
            urls[THEIRS] = url
        except (RuntimeError, TimeoutError) as e:
            result.skipped[(key, THEIRS)] = _reason(str(e))
    return urls, stops, pids


def _pid(server: ServerProcess) -> int:
    return int(server.proc.pid)


def _reason(text: str) -> str:
    """A start-up failure's most telling line: the last one that says error, else the last."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    return (errors or lines or ["no output"])[-1][:300]


def run_speculative_bench(server_bin: Path | None, base: ServerSettings,
                          plan: Sequence[SpecScenario], reps: int, n_predict: int, out: Path,
                          ours: bool = True) -> SpecResult:
    """Each scenario in turn: both servers up with its flags, a warm-up request each, then
    `reps` runs per server, the servers' order rotated by run."""
    result = SpecResult()
    for sc in plan:
        urls, stops, pids = _start(sc, base, server_bin, ours, out, result)
        try:
            names = list(urls)
            say(f"speculative: {sc.name}, {sc.prompt} prompt, {reps} runs x {names}")
            with httpx.Client(timeout=600) as client:
                for name in names:
                    complete(client, urls[name], request(sc.prompt, -1, n_predict))
                for rep in range(reps):
                    for name in names[rep % len(names):] + names[:rep % len(names)]:
                        try:
                            pid = pids.get(name)
                            cpu0 = server_cpu_s(pid) if pid else 0.0
                            resp, wall = complete(client, urls[name],
                                                  request(sc.prompt, rep, n_predict))
                            cpu = server_cpu_s(pid) - cpu0 if pid else -1.0
                            result.samples.append(sample(sc, name, rep, resp, wall, cpu))
                        except (RuntimeError, httpx.HTTPError) as e:
                            result.errors.append(f"{sc.name} {name} run {rep}: {e}")
        finally:
            for stop in stops:
                stop()
    return result


# -- the table --------------------------------------------------------------------------------
def _of(result: SpecResult, scenario: str, server: str) -> list[SpecSample]:
    return [s for s in result.samples if s.scenario == scenario and s.server == server]


def _median(samples: Sequence[SpecSample], attr: str) -> float:
    return statistics.median(getattr(s, attr) for s in samples) if samples else 0.0


def acceptance(samples: Sequence[SpecSample]) -> str:
    """Accepted / drafted over every run, as the server's timings report them."""
    reported = [s for s in samples if s.draft_n >= 0]
    if not reported:
        return "not reported"
    drafted = sum(s.draft_n for s in reported)
    accepted = sum(s.draft_accepted for s in reported)
    return f"{accepted / drafted:.1%} of {drafted}" if drafted else "0 drafted"


def same_as_baseline(result: SpecResult, samples: Sequence[SpecSample], base: str) -> str:
    """In how many runs the output is the server's own non-speculative output, token for token
    (greedy: speculation must not change it)."""
    plain = {s.rep: s.content for s in _of(result, base, samples[0].server)} if samples else {}
    pairs = [(s.content, plain[s.rep]) for s in samples if s.rep in plain]
    return f"{sum(a == b for a, b in pairs)}/{len(pairs)}" if pairs else ""


def cpu_per_token(samples: Sequence[SpecSample]) -> str:
    """The server's CPU milliseconds a generated token, over every measured run."""
    measured = [s for s in samples if s.cpu_s >= 0]
    tokens = sum(s.predicted_n for s in measured)
    return f"{sum(s.cpu_s for s in measured) * 1e3 / tokens:.2f}" if tokens else ""


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if a and b else ""


def table(result: SpecResult, plan: Sequence[SpecScenario]) -> str:
    lines = ["| scenario | server | decode tok/s | end-to-end tok/s | accepted | same output as "
             "no speculation | runs | decode / llama-server | decode / own no speculation "
             "| server CPU ms / token |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for sc in plan:
        key, base = f"{sc.name}, {sc.prompt}", f"{BASELINE}, {sc.prompt}"
        for server in (OURS, THEIRS):
            samples = _of(result, key, server)
            if (key, server) in result.skipped or not samples:
                why = result.skipped.get((key, server), "no successful run")
                lines.append(f"| {key} | {server} | skipped: {why} | | | | | | | |")
                continue
            decode = _median(samples, "decode_tps")
            theirs = _median(_of(result, key, THEIRS), "decode_tps")
            own = _median(_of(result, base, server), "decode_tps")
            lines.append(
                f"| {key} | {server} | {decode:,.1f} | {_median(samples, 'e2e_tps'):,.1f} | "
                f"{acceptance(samples) if sc.speculative else ''} | "
                f"{same_as_baseline(result, samples, base) if sc.speculative else ''} | "
                f"{len(samples)} | {_ratio(decode, theirs) if server == OURS else ''} | "
                f"{_ratio(decode, own) if sc.speculative else ''} | {cpu_per_token(samples)} |")
    flags = {f"{sc.name}, {sc.prompt}": shlex.join(sc.flags) for sc in plan if sc.flags}
    lines += ["", "Flags (both servers): " + "; ".join(f"{k}: `{v}`" for k, v in flags.items())]
    return "\n".join(lines)


def write_results(result: SpecResult, plan: Sequence[SpecScenario], out: Path,
                  header: str = "") -> str:
    """Append the table to results.md (made if missing), the samples to speculative.json."""
    text = "\n## Speculative decoding (issue 20)\n\n" + header + table(result, plan) + "\n"
    with (out / "results.md").open("a", encoding="utf-8") as f:
        f.write(text)
    (out / "speculative.json").write_text(json.dumps(
        {"samples": [asdict(s) for s in result.samples],
         "skipped": {f"{k[0]} / {k[1]}": v for k, v in result.skipped.items()},
         "errors": result.errors}, indent=1))
    return text


def model_path(name: str) -> Path:
    """A native.testmodels name (generated if missing) or a GGUF path."""
    from native.testmodels import ensure_model
    from native.testmodels.catalog import RECIPES

    return ensure_model(name) if name in RECIPES else Path(name)


def run(server_bin: Path | None, threads: int, gpu_layers: int, extra: tuple[str, ...],
        reps: int, out: Path, target: str = "tiny-bpe", draft: str = "tiny-bpe-draft",
        n_predict: int = 64, n_max: int = 8, ours_ngram: Sequence[str] | None = None) -> int:
    """`python -m bench --speculative[-only]`: every scenario, the table printed and appended
    to results.md; 1 if a request failed."""
    target_path = model_path(target)
    plan = scenarios(target_path, model_path(draft), n_max, gpu_layers > 0, ours_ngram,
                     (model_path(DEEP_TARGET), model_path(DEEP_DRAFT)))
    base = ServerSettings(target_path, ctx=4096, parallel=1, threads=threads,
                          gpu_layers=gpu_layers, extra=extra)
    result = run_speculative_bench(server_bin, base, plan, reps, n_predict, out)
    header = (f"Target {target_path.name} ({DEEP_TARGET} for the {DEEP} rows, drafted by "
              f"{DEEP_DRAFT}), disagreeing draft {draft}, {n_predict} tokens a "
              f"request, {reps} runs; medians; ratios above 1: ours (or speculation) faster\n\n")
    print(write_results(result, plan, out, header))
    for error in result.errors:
        say(error)
    return 1 if result.errors else 0
