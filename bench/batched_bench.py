"""llama.cpp's own `llama-batched-bench`: the engine's throughput with no server around it.

Run from the same build as llama-server, with the same model, threads, batch sizes and offload,
for the same prompt length, generation length and numbers of parallel sequences as the
aggregate scenarios. Its `speed_tg` at B sequences is the ceiling for B concurrent streams.
`--server-args` are not passed on (they may be server-only flags): with attention or cache
options among them, the ceiling is for llama.cpp's defaults.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.servers import ServerSettings


@dataclass(frozen=True)
class BatchedPoint:
    streams: int
    speed_tg: float  # generated tokens per second over all sequences
    speed_pp: float  # prompt tokens per second


def run_batched_bench(binary: Path, settings: ServerSettings, streams: Sequence[int],
                      prompt: int, gen: int, log: Path, timeout: float = 900.0) -> list[
                          BatchedPoint]:
    """One llama-batched-bench run over `streams`; the points it measured (some may be skipped
    by the tool when the context is too small, so the context is sized to fit the largest)."""
    ctx = max(settings.ctx, max(streams) * (prompt + gen))
    cmd = [str(binary), "-m", str(settings.model), "-c", str(ctx), "-b", str(settings.batch),
           "-ub", str(settings.ubatch), "-t", str(settings.threads), "-tb", str(settings.threads),
           "-ngl", str(settings.gpu_layers), "-npp", str(prompt), "-ntg", str(gen),
           "-npl", ",".join(str(n) for n in streams), "--output-format", "jsonl"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    log.write_text(f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    if proc.returncode != 0:
        raise RuntimeError(f"llama-batched-bench failed ({proc.returncode}); see {log}")
    points = []
    for line in (proc.stdout + "\n" + proc.stderr).splitlines():
        line = line.strip()
        if line.startswith("{") and "speed_tg" in line:
            row = json.loads(line)
            points.append(BatchedPoint(int(row["pl"]), float(row["speed_tg"]),
                                       float(row["speed_pp"])))
    return points
