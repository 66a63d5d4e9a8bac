"""From samples to the report: medians, percentiles, speed ratios, the Markdown tables.

A metric with one value per run is summarised by the median over runs; one with several values
per run (the time to first token of many requests) by the 50th and 99th percentiles of all its
values. The ratio is a speed ratio, so that above 1 always means ours is better: ours /
llama-server for throughput, llama-server / ours for latency.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.batched_bench import BatchedPoint
from bench.runner import ENVOY, GRPC, LLAMA_SERVER, LLAMA_SERVER_BS, PATHS, REST, PhaseResult
from bench.scenarios import Scenario, aggregate_streams


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); NaN for no values."""
    if not values:
        return math.nan
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


@dataclass(frozen=True)
class Row:
    phase: str
    scenario: str
    title: str
    metric: str
    stat: str  # "median", "p50", "p99"
    unit: str
    higher: bool
    values: dict[str, float]  # path -> summary value
    n: int  # values behind each summary (per path, the smallest)

    def ratio(self, path: str, base: str = LLAMA_SERVER) -> float:
        """`path` against `base`, > 1 where `path` does better."""
        ours, theirs = self.values.get(path, math.nan), self.values.get(base, math.nan)
        if self.unit == "tokens" or not (ours > 0 and theirs > 0):
            return math.nan
        return ours / theirs if self.higher else theirs / ours


def summarize(phase: PhaseResult, scenarios: Sequence[Scenario]) -> list[Row]:
    rows = []
    for sc in scenarios:
        samples = [s for s in phase.samples if s["scenario"] == sc.name and s["values"]]
        if not samples:
            continue
        for metric in sc.metrics:
            per_path: dict[str, list[list[float]]] = {}
            for s in samples:
                per_path.setdefault(s["path"], []).append(s["values"][metric.name])
            pooled = any(len(v) > 1 for runs in per_path.values() for v in runs)
            stats = ("p50", "p99") if pooled else ("median",)
            for stat in stats:
                values, counts = {}, []
                for path, runs in per_path.items():
                    flat = [x for run in runs for x in run]
                    values[path] = percentile(flat, 0.99 if stat == "p99" else 0.5)
                    counts.append(len(flat))
                rows.append(Row(phase.name, sc.name, sc.title, metric.name, stat, metric.unit,
                                metric.higher, values, min(counts)))
    return rows


def _fmt(x: float, unit: str = "") -> str:
    if math.isnan(x):
        return "–"
    if unit == "ratio":
        return f"{x:.2f}"
    return f"{x:,.1f}" if abs(x) < 1000 else f"{x:,.0f}"


# The ratio columns: (numerator path, denominator path, header).
RATIOS = ((GRPC, LLAMA_SERVER, "gRPC / llama-server"), (REST, LLAMA_SERVER, "REST / llama-server"),
          (GRPC, LLAMA_SERVER_BS, "gRPC / llama-server -bs"),
          (REST, LLAMA_SERVER_BS, "REST / llama-server -bs"),
          (ENVOY, REST, "Envoy / REST bridge"))
PATH_HEADERS = {GRPC: "gRPC", REST: "REST bridge", ENVOY: "REST via Envoy",
                LLAMA_SERVER: "llama-server", LLAMA_SERVER_BS: "llama-server -bs"}


def results_table(rows: Sequence[Row], skipped: dict[str, str]) -> str:
    head = ("| phase | scenario | metric | " + " | ".join(PATH_HEADERS[p] for p in PATHS) + " | "
            + " | ".join(h for _, _, h in RATIOS) + " |")
    lines = [head, "|" + " --- |" * (3 + len(PATHS) + len(RATIOS))]
    for r in rows:
        label = f"{r.metric} {r.stat}" if r.stat != "median" else r.metric
        cells = [_fmt(r.values.get(p, math.nan)) for p in PATHS]
        ratios = [_fmt(r.ratio(a, b), "ratio") for a, b, _ in RATIOS]
        lines.append(f"| {r.phase} | {r.title} (n={r.n}) | {label} ({r.unit}) | "
                     + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    for path, why in skipped.items():
        lines.append(f"\n*{path} skipped: {why}.*")
    return "\n".join(lines)


def phase_parallel(phase: str) -> int:
    """--parallel of a phase named "npN" (0 for another name)."""
    rest = phase.removeprefix("np")
    return int(rest) if rest.isdigit() else 0


def aggregate_points(rows: Sequence[Row]) -> dict[str, dict[int, float]]:
    """path -> streams -> median aggregate tok/s, over every phase. Where two phases ran the
    same stream count (16 streams at --parallel 8 and at 64), the phase with a slot for every
    stream and the fewest slots wins (the other's extra streams only queue)."""
    best: dict[tuple[str, int], tuple[tuple[bool, int], float]] = {}
    for r in rows:
        n = aggregate_streams(r.scenario)
        if r.metric != "aggregate" or n is None:
            continue
        par = phase_parallel(r.phase)
        rank = (par < n, par if par >= n else -par)
        for path, v in r.values.items():
            if math.isnan(v):
                continue
            if (path, n) not in best or rank < best[(path, n)][0]:
                best[(path, n)] = (rank, v)
    found: dict[str, dict[int, float]] = {}
    for (path, n), (_, v) in sorted(best.items()):
        found.setdefault(path, {})[n] = v
    return found


def limit_table(rows: Sequence[Row], batched: dict[int, BatchedPoint],
                parallel_of: dict[str, int]) -> str:
    """Each path's aggregate throughput as a fraction of llama-batched-bench's at the same
    number of sequences (at most the phase's --parallel: more streams than slots just wait)."""
    lines = ["| phase | streams | batched-bench tok/s | "
             + " | ".join(PATH_HEADERS[p] for p in PATHS) + " |", "|" + " --- |" * (3 + len(PATHS))]
    for r in rows:
        n = aggregate_streams(r.scenario)
        if r.metric != "aggregate" or n is None:
            continue
        point = batched.get(min(n, parallel_of.get(r.phase, n)))
        if point is None:
            continue
        cells = []
        for p in PATHS:
            v = r.values.get(p, math.nan)
            cells.append("–" if math.isnan(v) else f"{_fmt(v)} ({v / point.speed_tg:.0%})")
        lines.append(f"| {r.phase} | {n} | {_fmt(point.speed_tg)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def memory_table(phases: Sequence[PhaseResult]) -> str:
    lines = ["| phase | our service (all processes) | llama-server | llama-server -bs "
             "| ours / llama-server |", "| --- | --- | --- | --- | --- |"]
    for ph in phases:
        ours = ph.peak_rss_mib.get("ours", math.nan)
        theirs = ph.peak_rss_mib.get(LLAMA_SERVER, math.nan)
        bs = ph.peak_rss_mib.get(LLAMA_SERVER_BS, math.nan)
        ratio = ours / theirs if theirs > 0 else math.nan
        lines.append(f"| {ph.name} | {_fmt(ours)} MiB | {_fmt(theirs)} MiB | {_fmt(bs)} MiB | "
                     f"{_fmt(ratio, 'ratio')} |")
    return "\n".join(lines)


def render_markdown(meta: dict[str, Any], rows: Sequence[Row], phases: Sequence[PhaseResult],
                    batched: dict[int, BatchedPoint], parallel_of: dict[str, int]) -> str:
    m = meta["machine"]
    skipped: dict[str, str] = {}
    for ph in phases:
        skipped.update(ph.skipped)
    parts = [
        f"Run {meta['date']} · `{meta['command']}`",
        "",
        f"Machine: {m['cpu_model']}, {m['usable_cpus']} usable CPUs ({m['logical_cpus']} "
        f"logical), {m['mem_total_gib']} GiB; threads used: {m['threads_used']}"
        + (f"; GPU: {m['gpu']}" if m["gpu"] else "") + f"; commit {m['commit']}.",
        "",
        f"Settings: {meta['settings']}",
        "",
        "### Medians and speed ratios (above 1: ours faster)",
        "",
        results_table(rows, skipped),
        "",
        "### Aggregate generation against llama-batched-bench (the engine's limit)",
        "",
        limit_table(rows, batched, parallel_of) if batched else "*llama-batched-bench not run.*",
        "",
        "### Peak resident memory (VmHWM, summed over each server's processes)",
        "",
        memory_table(phases),
    ]
    errors = [e for ph in phases for e in ph.errors]
    if errors:
        parts += ["", f"**{len(errors)} request(s) failed**, first: `{errors[0]}`"]
    return "\n".join(parts) + "\n"
