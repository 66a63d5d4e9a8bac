"""`python -m bench`'s several-model plan (issue 26) as pure logic: --models and the matched
wide phases parsed into the right server settings, the llama-server --backend-sampling anchor in
every table, the plot's one line per path over phases, and the combined outputs of a --models
run written and re-rendered from fake results (no server is started here; the end-to-end run is
tests/test_bench_smoke.py's)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from bench import output, report
from bench.batched_bench import BatchedPoint
from bench.runner import GRPC, LLAMA_SERVER, LLAMA_SERVER_BS, REST, PhaseResult

MAIN: ModuleType = importlib.import_module("bench.__main__")
GPU_PLAN = ["--cuda", "--models", "bench,1b,8b", "--concurrency", "1,8", "--wide-concurrency",
            "64,128,256", "--wide-parallel", "0", "--wide-ctx-per-slot", "256"]


def test_models_option_takes_catalog_names() -> None:
    args = MAIN.parse_args(GPU_PLAN)
    assert args.models == ["bench", "1b", "8b"]
    assert MAIN.parse_args([]).models == ["bench"]
    with pytest.raises(SystemExit):
        MAIN.parse_args(["--models", "bench,70b"])


def test_matched_wide_phases_get_their_own_parallel_and_small_slots() -> None:
    args = MAIN.parse_args(GPU_PLAN)
    phases = MAIN._plan(args, Path("m.gguf"))
    assert [p.name for p in phases] == ["np8", "np64", "np128", "np256"]
    assert [p.settings.parallel for p in phases] == [8, 64, 128, 256]
    assert phases[0].settings.ctx == 8 * 2048  # the main phase keeps room for the 1,024 prefix
    assert [p.settings.ctx for p in phases[1:]] == [64 * 256, 128 * 256, 256 * 256]
    assert [[s.name for s in p.scenarios] for p in phases[1:]] == [
        ["aggregate_64"], ["aggregate_128"], ["aggregate_256"]]
    assert all(p.settings.gpu_layers == 999 for p in phases)


def test_wide_phases_default_as_before_and_follow_the_scenario_selection() -> None:
    gpu = MAIN._plan(MAIN.parse_args(["--cuda"]), Path("m.gguf"))
    assert [p.name for p in gpu] == ["np8", "np64"]
    assert [s.name for s in gpu[1].scenarios] == ["aggregate_16", "aggregate_32", "aggregate_64"]
    assert [p.name for p in MAIN._plan(MAIN.parse_args([]), Path("m.gguf"))] == ["np8"]
    picked = MAIN._plan(MAIN.parse_args([*GPU_PLAN, "--scenarios", "single,aggregate_128"]),
                        Path("m.gguf"))
    assert [(p.name, [s.name for s in p.scenarios]) for p in picked if p.scenarios] == [
        ("np8", ["single"]), ("np128", ["aggregate_128"])]


def _row(phase: str, streams: int, values: dict[str, float]) -> report.Row:
    return report.Row(phase, f"aggregate_{streams}", f"aggregate generation, {streams} streams",
                      "aggregate", "median", "tok/s", True, values, 3)


ROWS = [
    _row("np8", 8, {GRPC: 800.0, REST: 790.0, LLAMA_SERVER: 400.0, LLAMA_SERVER_BS: 500.0}),
    _row("np8", 64, {GRPC: 810.0, LLAMA_SERVER: 410.0}),  # more streams than slots: queued
    _row("np64", 64, {GRPC: 6000.0, REST: 5900.0, LLAMA_SERVER: 1500.0,
                      LLAMA_SERVER_BS: 2500.0}),
    report.Row("np8", "ttft_idle", "time to first token, idle", "ttft", "p50", "ms", False,
               {GRPC: 5.0, LLAMA_SERVER: 10.0, LLAMA_SERVER_BS: 8.0}, 30),
]


def test_results_table_reports_both_llama_server_anchors() -> None:
    table = report.results_table(ROWS, {})
    head, rule, *lines = table.splitlines()
    assert "| llama-server | llama-server -bs |" in head
    assert "gRPC / llama-server -bs" in head and "REST / llama-server -bs" in head
    assert head.count("|") == rule.count("|")
    np64 = next(ln for ln in lines if ln.startswith("| np64 "))
    # 6000 / 1500 against the default flags, 6000 / 2500 against -bs
    assert "| 4.00 | 3.93 | 2.40 | 2.36 |" in np64
    idle = next(ln for ln in lines if "idle" in ln)
    assert "| 2.00 | – | 1.60 | – |" in idle  # latency: theirs / ours; no REST value


def test_limit_table_has_a_column_for_each_anchor() -> None:
    batched = {8: BatchedPoint(8, 1000.0, 1.0), 64: BatchedPoint(64, 10000.0, 1.0)}
    table = report.limit_table(ROWS, batched, {"np8": 8, "np64": 64})
    assert "| llama-server -bs |" in table.splitlines()[0]
    assert "| np64 | 64 | 10,000 | 6,000 (60%) | 5,900 (59%) | – | 1,500 (15%) | 2,500 (25%) |" \
        in table
    assert "| np8 | 64 | 1,000 | 810.0 (81%) |" in table  # capped at --parallel 8


def test_aggregate_points_take_each_stream_count_where_every_stream_has_a_slot() -> None:
    points = report.aggregate_points(ROWS)
    assert points[GRPC] == {8: 800.0, 64: 6000.0}
    assert points[LLAMA_SERVER_BS] == {8: 500.0, 64: 2500.0}
    assert points[REST] == {8: 790.0, 64: 5900.0}


def _fake_run(out: Path, name: str) -> output.ModelPanel:
    meta: dict[str, Any] = {
        "date": "2026-12-06 23:00", "command": "python -m bench --models a,b",
        "machine": {"cpu_model": "cpu", "usable_cpus": 2, "logical_cpus": 2, "threads_used": 1,
                    "mem_total_gib": 1.0, "gpu": "", "commit": "abc"},
        "settings": "fake", "elapsed_s": 1.0,
    }
    phases = [PhaseResult("np8", {"parallel": 8}), PhaseResult("np64", {"parallel": 64})]
    batched = {8: BatchedPoint(8, 1000.0, 1.0), 64: BatchedPoint(64, 10000.0, 1.0)}
    out.mkdir(parents=True)
    markdown = output.write_outputs(out, meta, ROWS, phases, batched)
    return output.ModelPanel(name, markdown, ROWS, batched)


def test_a_models_run_writes_a_section_and_a_panel_per_model(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the plot needs matplotlib (a dev dependency)")
    panels = [_fake_run(tmp_path / n, n) for n in ("bench", "8b")]
    markdown = output.write_combined(tmp_path, panels, "CPU: test")
    assert markdown.index("### Model `bench`") < markdown.index("### Model `8b`")
    assert markdown.count("#### Medians and speed ratios") == 2
    assert json.loads((tmp_path / "models.json").read_text()) == {"models": ["bench", "8b"]}
    assert (tmp_path / "aggregate-models.png").stat().st_size > 0
    (tmp_path / "results.md").unlink()
    (tmp_path / "aggregate-models.png").unlink()
    assert output.main([str(tmp_path / "models.json")]) == 0  # re-rendered from the JSON alone
    assert (tmp_path / "results.md").read_text() == markdown
    assert (tmp_path / "aggregate-models.png").stat().st_size > 0
