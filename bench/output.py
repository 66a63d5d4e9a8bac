"""Writing a run's outputs (results.md, results.json, aggregate.png), and re-rendering them.

    python -m bench.output path/to/results.json     # results.md and aggregate.png again
    python -m bench.output path/to/models.json      # a --models run: every model's, and the
                                                    # combined results.md and aggregate-models.png

Re-rendering reads only results.json, so the tables and the plot of a run made elsewhere (the
GPU host) can be regenerated after the report code changes, without running anything again.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import report, timeline_table
from bench.batched_bench import BatchedPoint
from bench.plot import plot_aggregate, plot_panels
from bench.runner import PhaseResult


def plot_title(machine: dict[str, Any]) -> str:
    return f"GPU: {machine['gpu']}" if machine.get("gpu") else f"CPU: {machine['cpu_model']}" \
        f" ({machine['usable_cpus']} CPUs, {machine['threads_used']} threads)"


def write_outputs(out: Path, meta: dict[str, Any], rows: Sequence[report.Row],
                  phases: Sequence[PhaseResult], batched: dict[int, BatchedPoint]) -> str:
    """Write the three files into `out`; returns the Markdown."""
    parallel_of = {ph.name: int(ph.settings["parallel"]) for ph in phases}
    markdown = report.render_markdown(meta, rows, phases, batched, parallel_of)
    if section := timeline_table.table(phases):  # the phases ran with --step-timeline
        markdown += "\n" + section
    (out / "results.md").write_text(markdown)
    (out / "results.json").write_text(json.dumps({
        **meta,
        "phases": [asdict(ph) for ph in phases],
        "summary": [asdict(r) for r in rows],
        "batched_bench": [asdict(p) for p in batched.values()],
    }, indent=1))
    plot_aggregate(report.aggregate_points(rows), batched, plot_title(meta["machine"]),
                   out / "aggregate.png")
    return markdown


@dataclass(frozen=True)
class ModelPanel:
    """One model's part of a --models run."""

    name: str
    markdown: str
    rows: Sequence[report.Row]
    batched: dict[int, BatchedPoint]


def write_combined(out: Path, panels: Sequence[ModelPanel], title: str) -> str:
    """A --models run's top level: results.md with a section per model (each model's own files
    are in out/<name>/), aggregate-models.png with a panel per model, and models.json naming
    them for re-rendering. Returns the Markdown."""
    parts = []
    for panel in panels:
        body = panel.markdown.replace("\n### ", "\n#### ")
        parts += [f"### Model `{panel.name}`", "", body]
    markdown = "\n".join(parts)
    (out / "results.md").write_text(markdown)
    (out / "models.json").write_text(json.dumps({"models": [p.name for p in panels]}))
    plot_panels([(p.name, report.aggregate_points(p.rows), p.batched) for p in panels],
                title, out / "aggregate-models.png")
    return markdown


def _rerender_models(listing: Path, out: Path) -> str:
    names = json.loads(listing.read_text())["models"]
    panels, title = [], ""
    for name in names:
        sub = listing.parent / name
        markdown = rerender(sub / "results.json", out / name)
        data = json.loads((sub / "results.json").read_text())
        title = plot_title(data["machine"])
        panels.append(ModelPanel(name, markdown, [report.Row(**r) for r in data["summary"]],
                                 {int(p["streams"]): BatchedPoint(**p)
                                  for p in data["batched_bench"]}))
    out.mkdir(parents=True, exist_ok=True)
    return write_combined(out, panels, title)


def rerender(results: Path, out: Path) -> str:
    data = json.loads(results.read_text())
    meta = {k: data[k] for k in ("date", "command", "machine", "settings", "elapsed_s")}
    phases = [PhaseResult(**ph) for ph in data["phases"]]
    rows = [report.Row(**r) for r in data["summary"]]
    batched = {int(p["streams"]): BatchedPoint(**p) for p in data["batched_bench"]}
    out.mkdir(parents=True, exist_ok=True)
    return write_outputs(out, meta, rows, phases, batched)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="re-render results.md and aggregate.png")
    parser.add_argument("results", type=Path, help="a results.json written by python -m bench, "
                        "or the models.json of a --models run")
    parser.add_argument("--out", type=Path, help="directory (default: the JSON's)")
    args = parser.parse_args(argv)
    out = args.out or args.results.parent
    if args.results.name == "models.json":
        print(_rerender_models(args.results, out))
    else:
        print(rerender(args.results, out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
