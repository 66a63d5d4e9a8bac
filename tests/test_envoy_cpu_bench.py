"""bench/envoy_cpu.py (issue 24: what REST through Envoy costs the service in CPU a token): its
table from known samples (pure), and one short real run of every path against the tiny model
(the service, its bridge and Envoy), whose table has a row of figures for each."""

from __future__ import annotations

import re

import pytest

from bench.envoy_cpu import EXTRA_PATHS, PATHS, Sample, main, report


def test_report_is_per_token_and_against_grpc() -> None:
    samples = {
        "grpc": [Sample(100, 50_000_000, 4_000_000, 0.02),
                 Sample(100, 52_000_000, 4_200_000, 0.03)],
        "envoy": [Sample(100, 60_000_000, 6_000_000, 0.05)],
    }
    text = report(8, 100, samples)
    assert "8 streams x 100 tokens, 2 reps" in text
    # medians: gRPC 510 us a token (50 and 52 ms over 100 tokens), its loop 41
    assert "| grpc | 510.0 | 41.0 | 2.5% | +0.0 |" in text
    assert "| envoy | 600.0 | 60.0 | 5.0% | +90.0 |" in text


@pytest.mark.slow
def test_a_short_run_measures_every_path(capsys: pytest.CaptureFixture[str]) -> None:
    paths = [*PATHS, *EXTRA_PATHS]
    assert main(["--streams", "2", "--tokens", "4", "--reps", "1", "--paths", *paths]) == 0
    out = capsys.readouterr().out
    for path in paths:
        row = re.search(rf"^\| {re.escape(path)} \| ([\d.]+) \| ([\d.]+) \| ", out, re.M)
        assert row is not None, f"no row for {path}:\n{out}"
        assert float(row.group(1)) > 0 and float(row.group(2)) > 0
