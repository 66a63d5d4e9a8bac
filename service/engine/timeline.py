"""The step timeline (issue 26 item 4): where a step's time goes, the host's work against the
decode, from perf_counter stamps. A measurement knob, off by default: set
LLAMA_GRPC_STEP_TIMELINE=<path> and the engine writes a JSON summary there when it stops.

A step runs through PHASES in order, each stamped when it ends:

- intake: the inbox drained and the burst gathered (the wait of an idle engine excluded)
- schedule: Scheduler.schedule, its plan applied (memory operations, Started events), media
- build: the batch filled, LoRA set
- decode: llama_decode; on CUDA it returns once the graph is queued. The engine's decode call
  then waits for the backend in the same native call (Executor.decode), which stamps the
  moment llama_decode returned (Context.launched), and the wait for the GPU is its own phase:
- gpu_wait: llama_synchronize (~0 on the CPU backend, where the decode computes in the call),
  with the wait for the GIL that ends the native call
- post: Scheduler.advance, the counters, progress events, embeddings and prompt-only ends
- sample: the native sampling of the step's slots (and speculative verification)
- tokens: each sampled token handled (_on_token: accept, detokenize, text stream, stop checks,
  events)
- deliver: the step's events handed over (Outbox.deliver), /metrics' snapshot, loop wake-ups

Each phase has its wall time and the engine thread's CPU time (time.thread_time): where the
first exceeds the second, the thread waited, for the GIL (the event loop holds it while it turns
the last step's events into responses), for the GPU, or for a core. "Host" is every phase but
decode and gpu_wait. Steps are grouped by their size: tokens in the
batch and tokens generated (a 64-stream generation step is (64, 64)); only steps that decoded
are recorded.
"""

from __future__ import annotations

import json
import os
import time
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

TIMELINE_ENV = "LLAMA_GRPC_STEP_TIMELINE"
PHASES = ("intake", "schedule", "build", "decode", "gpu_wait", "post", "sample", "tokens",
          "deliver")
INTAKE, SCHEDULE, BUILD, DECODE, GPU_WAIT, POST, SAMPLE, TOKENS, DELIVER = range(len(PHASES))
DEVICE_PHASES = ("decode", "gpu_wait")
HOST_PHASES = tuple(p for p in PHASES if p not in DEVICE_PHASES)
MAX_STEPS = 2_000_000  # ~100 MB of stamps; later steps are counted, not kept


class Launched(Protocol):
    @property
    def launched(self) -> tuple[float, float]: ...  # perf_counter, thread_time


class Timeline:
    """The timeline when off: every call does nothing (a few calls a step, not a token)."""

    enabled = False

    def begin(self) -> None:
        """A loop iteration starts (again, after an idle wait: that wait is no step's)."""

    def mark(self, phase: int) -> None:
        """`phase` ends now."""

    def decoded(self, ctx: Launched, n_tokens: int) -> None:
        """The step's decode returned: it is recorded, the GPU's wait split off."""

    def end(self, n_generated_total: int) -> None:
        """The iteration ends (after delivery); `n_generated_total`: the engine's counter."""

    def write(self) -> None:
        """The summary to the file, if on."""


class StepTimeline(Timeline):
    enabled = True

    def __init__(self, path: Path | None, max_steps: int = MAX_STEPS) -> None:
        self.path = path
        self.max_steps = max_steps
        self._cur = [0.0] * (2 * len(PHASES))
        self._last = self._last_cpu = 0.0
        self._n_tokens = 0  # the current step's batch size; 0: it decoded nothing
        self._generated_before = 0
        self.sizes: array[int] = array("q")  # per recorded step: n_tokens, n_generated
        # per recorded step: wall seconds per phase, then the thread's CPU seconds per phase
        self.stamps: array[float] = array("d")
        self.dropped = 0

    def begin(self) -> None:
        self._cur = [0.0] * (2 * len(PHASES))
        self._n_tokens = 0
        self._last, self._last_cpu = time.perf_counter(), time.thread_time()

    def mark(self, phase: int) -> None:
        self._mark_at(phase, time.perf_counter(), time.thread_time())

    def _mark_at(self, phase: int, now: float, cpu: float) -> None:
        self._cur[phase] += now - self._last
        self._cur[len(PHASES) + phase] += cpu - self._last_cpu
        self._last, self._last_cpu = now, cpu

    def decoded(self, ctx: Launched, n_tokens: int) -> None:
        self._mark_at(DECODE, *ctx.launched)
        self.mark(GPU_WAIT)
        self._n_tokens = n_tokens

    def end(self, n_generated_total: int) -> None:
        self.mark(DELIVER)
        generated = n_generated_total - self._generated_before
        self._generated_before = n_generated_total
        if not self._n_tokens:
            return
        if len(self.sizes) >= 2 * self.max_steps:
            self.dropped += 1
            return
        self.sizes.extend((self._n_tokens, generated))
        self.stamps.extend(self._cur)

    def summary(self) -> dict[str, Any]:
        return summarize(self.sizes, self.stamps, self.dropped)

    def write(self) -> None:
        if self.path is not None:
            self.path.write_text(json.dumps(self.summary(), indent=1) + "\n")


def from_env() -> Timeline:
    """The timeline LLAMA_GRPC_STEP_TIMELINE asks for: off (unset or empty) or writing there."""
    path = os.environ.get(TIMELINE_ENV, "")
    return StepTimeline(Path(path)) if path else Timeline()


def _percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest rank on sorted values."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def _stats_us(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    mean = sum(ordered) / len(ordered) if ordered else 0.0
    return {"mean": round(mean * 1e6, 1), "p50": round(_percentile(ordered, 0.5) * 1e6, 1),
            "p90": round(_percentile(ordered, 0.9) * 1e6, 1)}


def _columns(rows: list[list[float]], offset: int) -> dict[str, list[float]]:
    """Per phase, host, device and the whole step: a value per step (rows[offset:])."""
    n = len(PHASES)
    columns = {p: [r[offset + i] for r in rows] for i, p in enumerate(PHASES)}
    host_i = [offset + PHASES.index(p) for p in HOST_PHASES]
    dev_i = [offset + PHASES.index(p) for p in DEVICE_PHASES]
    columns["host"] = [sum(r[i] for i in host_i) for r in rows]
    columns["device"] = [sum(r[i] for i in dev_i) for r in rows]
    columns["step"] = [sum(r[offset:offset + n]) for r in rows]
    return columns


def _group(rows: list[list[float]], n_generated: int) -> dict[str, Any]:
    """One size's steps: per phase, host and device, per step (mean, p50, p90) and per
    generated token (the phase's total over the tokens), and the engine thread's CPU time per
    step (mean)."""
    wall, cpu = _columns(rows, 0), _columns(rows, len(PHASES))
    tokens = max(n_generated, 1)
    return {
        "per_step_us": {k: _stats_us(v) for k, v in wall.items()},
        "per_token_us": {k: round(sum(v) / tokens * 1e6, 2) for k, v in wall.items()},
        "cpu_per_step_us": {k: _stats_us(v)["mean"] for k, v in cpu.items()},
    }


def summarize(sizes: Sequence[int], stamps: Sequence[float], dropped: int = 0
              ) -> dict[str, Any]:
    """The JSON summary of recorded steps: `sizes` holds (n_tokens, n_generated) pairs,
    `stamps` 2 * len(PHASES) seconds a step (wall per phase, then CPU). Groups by size, most
    steps first, then "all"."""
    n = 2 * len(PHASES)
    by_size: dict[tuple[int, int], list[list[float]]] = {}
    for k in range(len(sizes) // 2):
        key = (int(sizes[2 * k]), int(sizes[2 * k + 1]))
        by_size.setdefault(key, []).append(list(stamps[n * k:n * (k + 1)]))
    groups = []
    for (n_tokens, n_generated), rows in sorted(by_size.items(), key=lambda kv: -len(kv[1])):
        groups.append({"n_tokens": n_tokens, "n_generated": n_generated, "steps": len(rows),
                       "tokens": n_generated * len(rows),
                       **_group(rows, n_generated * len(rows))})
    all_rows = [r for rows in by_size.values() for r in rows]
    total_generated = sum(int(sizes[2 * k + 1]) for k in range(len(sizes) // 2))
    return {
        "phases": list(PHASES), "host_phases": list(HOST_PHASES),
        "device_phases": list(DEVICE_PHASES), "steps": len(all_rows), "dropped": dropped,
        "all": {"steps": len(all_rows), "tokens": total_generated,
                **_group(all_rows, total_generated)},
        "groups": groups,
    }
