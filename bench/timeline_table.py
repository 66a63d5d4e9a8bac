"""`python -m bench --step-timeline`: our server writes its step timeline
(service/engine/timeline.py) when a phase stops it; this renders "host vs decode per step" for
each aggregate scenario, from the steps whose batch is that scenario's streams, all generating.

The timeline covers every request our server ran in the phase (warm-ups and every path of ours);
a scenario's steps are told apart by their size, not by time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.runner import PhaseResult
from bench.scenarios import aggregate_streams

# The host phases shown one by one (service/engine/timeline.py's order).
SHOWN = ("intake", "schedule", "build", "post", "sample", "tokens", "deliver")


def _group(timeline: dict[str, Any], streams: int) -> dict[str, Any] | None:
    groups: list[dict[str, Any]] = timeline.get("groups", [])
    for g in groups:
        if g["n_tokens"] == streams and g["n_generated"] == streams:
            return g
    return None


def table(phases: Sequence[PhaseResult]) -> str:
    """The Markdown section; "" when no phase has a timeline."""
    lines = []
    for ph in phases:
        if not ph.timeline:
            continue
        parallel = int(ph.settings["parallel"])
        streams = sorted({min(n, parallel) for s in ph.samples
                          if (n := aggregate_streams(s["scenario"]) or 0) > 0})
        for n in streams:
            g = _group(ph.timeline, n)
            if g is None:
                lines.append(f"| {ph.name} | {n} | 0 | no step of {n} generating tokens |"
                             + " |" * (6 + len(SHOWN)))
                continue
            step, tok, cpu = g["per_step_us"], g["per_token_us"], g.get("cpu_per_step_us", {})
            host, dev = step["host"]["mean"], step["device"]["mean"]
            share = host / (host + dev) if host + dev else 0.0
            lines.append(
                f"| {ph.name} | {n} | {g['steps']:,} | {step['step']['p50'] / 1e3:.2f} | "
                f"{step['decode']['mean'] / 1e3:.2f} ({cpu.get('decode', 0.0) / 1e3:.2f}) | "
                f"{step['gpu_wait']['mean'] / 1e3:.2f} ({cpu.get('gpu_wait', 0.0) / 1e3:.2f}) | "
                f"{host / 1e3:.2f} ({share:.0%}) | {cpu.get('host', 0.0) / 1e3:.2f} | "
                f"{tok['host']:.1f} | "
                + " | ".join(f"{step[p]['mean']:,.0f}" for p in SHOWN) + " |")
    if not lines:
        return ""
    head = ("| phase | streams | steps | step p50 (ms) | decode (ms, CPU) | GPU wait (ms, CPU) | "
            "host (ms, share) | host CPU (ms) | host µs/token | "
            + " | ".join(f"{p} µs" for p in SHOWN) + " |")
    return "\n".join([
        "## Host vs decode per step (our server's step timeline)", "",
        "Steps whose batch is the scenario's streams, every one generating; means per step "
        "unless said (step: p50), with the engine thread's CPU time in brackets. decode: "
        "llama_decode's call (on CUDA: queuing the graph); GPU wait: the rest of the native "
        "call, llama_synchronize and taking the GIL back (before 1ae6677: a separate "
        "llama_synchronize, and the decode's wall time included the GIL's); host: every other "
        "phase; host CPU: the engine thread's CPU time in them. Wall time above CPU time: the "
        "thread waited for the GIL (held by the event loop), for the GPU without spinning, or "
        "for a core (service/engine/timeline.py).", "",
        head, "|" + " --- |" * (9 + len(SHOWN)), *lines, ""])
