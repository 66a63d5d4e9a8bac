"""The PNGs: aggregate generation tokens/s against concurrent streams, one line per path and
anchor (llama-server with default flags, with --backend-sampling, and llama-batched-bench's
throughput as the engine's ceiling); one panel per model when a run measured several."""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.batched_bench import BatchedPoint

_LABELS = {"grpc": "ours, gRPC", "rest": "ours, REST bridge", "envoy": "ours, REST via Envoy",
           "llama-server": "llama-server (default flags)",
           "llama-server-bs": "llama-server --backend-sampling"}
_STYLES = {"grpc": ("tab:blue", "-"), "rest": ("tab:orange", "-"), "envoy": ("tab:purple", "-"),
           "llama-server": ("tab:green", "-."), "llama-server-bs": ("tab:red", "-.")}

# One model's curves: path -> streams -> tok/s, and llama-batched-bench's points.
Panel = tuple[str, dict[str, dict[int, float]], dict[int, BatchedPoint]]


def _draw(ax: Any, points: dict[str, dict[int, float]], batched: dict[int, BatchedPoint],
          title: str) -> None:
    order = list(_LABELS)
    for path, by_streams in sorted(points.items(), key=lambda kv: (
            order.index(kv[0]) if kv[0] in order else len(order), kv[0])):
        xs = sorted(by_streams)
        colour, style = _STYLES.get(path, (None, "-"))
        ax.plot(xs, [by_streams[x] for x in xs], style, marker="o", color=colour,
                label=_LABELS.get(path, path))
    if batched:
        xs = sorted(batched)
        ax.plot(xs, [batched[x].speed_tg for x in xs], linestyle="--", marker=".",
                color="grey", label="llama-batched-bench (no server)")
    ax.set_xscale("log", base=2)
    ticks = sorted({x for by in points.values() for x in by} | set(batched))
    ax.set_xticks(ticks, [str(x) for x in ticks])
    ax.set_xlabel("concurrent streams (--parallel at least as many)")
    ax.set_ylabel("generated tokens/s (all streams)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)


def plot_panels(panels: Sequence[Panel], title: str, out: Path) -> bool:
    """One figure, one panel per model, drawn in a child process: matplotlib once died with
    SIGSEGV loading its fonts on a GPU host, which took the rest of the run with it. False
    (and nothing written) without matplotlib or when the child fails; `python -m bench.output`
    draws it again from results.json."""
    child = multiprocessing.get_context("spawn").Process(
        target=_plot_panels, args=(list(panels), title, out), name="bench-plot")
    child.start()
    child.join()
    if child.exitcode != 0:
        print(f"[bench] plotting {out.name} failed (exit code {child.exitcode}); the results "
              "are written: `python -m bench.output results.json` draws it again",
              file=sys.stderr)
    return child.exitcode == 0 and out.exists()


def _plot_panels(panels: Sequence[Panel], title: str, out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(7 * len(panels), 4.8), dpi=120,
                             squeeze=False)
    for ax, (name, points, batched) in zip(axes[0], panels, strict=True):
        _draw(ax, points, batched, f"{title}: {name}" if name else title)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def plot_aggregate(points: dict[str, dict[int, float]], batched: dict[int, BatchedPoint],
                   title: str, out: Path) -> bool:
    """One model's plot (see plot_panels)."""
    return plot_panels([("", points, batched)], title, out)
