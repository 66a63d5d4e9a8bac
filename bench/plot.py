"""The PNG: aggregate generation tokens/s against concurrent streams, one line per path, with
llama-batched-bench's throughput as the engine's ceiling."""

from __future__ import annotations

from pathlib import Path

from bench.batched_bench import BatchedPoint

_LABELS = {"grpc": "ours, gRPC", "rest": "ours, REST bridge", "envoy": "ours, REST via Envoy",
           "llama-server": "llama-server"}


def plot_aggregate(points: dict[tuple[str, str], dict[int, float]],
                   batched: dict[int, BatchedPoint], title: str, out: Path) -> bool:
    """Write the plot (one colour per path, one line style per phase); False (and nothing
    written) when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    phases = sorted({phase for _, phase in points}, key=lambda p: int(p.lstrip("np") or 0))
    colours = {"grpc": "tab:blue", "rest": "tab:orange", "llama-server": "tab:green"}
    for (path, phase), by_streams in sorted(points.items()):
        xs = sorted(by_streams)
        style = "-" if phase == phases[0] else ":"
        ax.plot(xs, [by_streams[x] for x in xs], style, marker="o", color=colours.get(path),
                label=f"{_LABELS.get(path, path)} ({phase.replace('np', '--parallel ')})")
    if batched:
        xs = sorted(batched)
        ax.plot(xs, [batched[x].speed_tg for x in xs], linestyle="--", color="grey",
                label="llama-batched-bench (no server)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent streams")
    ax.set_ylabel("generated tokens/s (all streams)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return True
