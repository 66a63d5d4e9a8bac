"""bench/scrape_overhead.py (issue 19: what scraping /metrics and /slots costs): its summary
figures from known runs (pure), and one short real run against the tiny model through the REST
bridge, whose report carries every figure."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from bench.scrape_overhead import (
    Run,
    blocked_per_get,
    blocked_share,
    measure,
    ratio_spread,
    report,
    thread_times,
    waiting_share,
)


def test_ratio_spread_is_over_pairs() -> None:
    pairs = [(100.0, 99.0), (50.0, 52.0), (80.0, 80.0), (200.0, 190.0), (10.0, 11.0)]
    mid, q1, q3, lo, hi = ratio_spread(pairs)
    assert (lo, mid, hi) == pytest.approx((0.95, 1.0, 1.1))
    assert (q1, q3) == pytest.approx((0.99, 1.04))
    assert ratio_spread([(4.0, 2.0)]) == (0.5,) * 5


def test_blocked_share_is_the_engine_thread_s_time_off_cpu_and_off_the_run_queue() -> None:
    pid, engine, other = 10, 11, 12
    before = {pid: (0, 0), engine: (1_000, 0), other: (0, 0)}
    # the main thread (the event loop) ran most, but it is not the engine
    after = {pid: (900, 0), engine: (601_000, 100), other: (50, 0), 13: (10, 0)}
    assert blocked_share(before, after, 1_000_000, pid) == pytest.approx(
        (1_000_000 - 600_000 - 100) / 1_000_000)
    assert blocked_share(before, {}, 1_000, pid) == 0.0
    assert waiting_share(before, after, 1_000_000, pid) == pytest.approx(100 / 1_000_000)
    assert waiting_share(before, {}, 1_000, pid) == 0.0


def test_thread_times_reads_this_process() -> None:
    times = thread_times(os.getpid())
    assert os.getpid() in times and times[os.getpid()][0] > 0


def test_blocked_per_get_is_the_scraped_run_s_extra_blocked_time_over_its_gets() -> None:
    # 2 points more of a 2 s steady state over 10 GETs: 4 ms a GET; 1 point less over 1 s and
    # 20 GETs: -0.5 ms; a pair without GETs in its steady state counts for nothing
    runs = [(Run(1.0, 0, 0.0, 1.0, 0.03, 2.0, 0), Run(1.0, 12, 0.0, 1.0, 0.05, 2.0, 10)),
            (Run(1.0, 0, 0.0, 1.0, 0.02, 1.0, 0), Run(1.0, 22, 0.0, 1.0, 0.01, 1.0, 20)),
            (Run(1.0, 0, 0.0, 1.0, 0.02, 1.0, 0), Run(1.0, 1, 0.0, 0.0, 0.0, 0.0, 0))]
    assert blocked_per_get(runs) == pytest.approx((4 - 0.5) / 2)
    assert blocked_per_get(runs[2:]) != blocked_per_get(runs[2:])  # nan: nothing to say


def test_report_says_every_figure() -> None:
    runs = [(Run(100.0, 0, 0.01, 101.0, 0.01, 2.0, 0, 0.1),
             Run(98.0, 20, 0.02, 99.0, 0.02, 2.0, 20, 0.3)),
            (Run(90.0, 0, 0.03, 91.0, 0.02, 2.0, 0, 0.1),
             Run(93.0, 22, 0.01, 93.0, 0.02, 2.0, 20, 0.1))]
    text = report("m.gguf", 8, 64, 1, runs,
                  {"/metrics": 0.5, "/slots": 0.4, "/health": 0.3})
    assert "95.0 tok/s unscraped, 95.5 tok/s scraped" in text
    assert "42 scrapes" in text
    assert "median 1.007, middle half 0.993-1.020, all 0.980-1.033" in text
    assert "2.00% unscraped, 1.50% scraped" in text
    assert "/metrics 0.50 ms, /slots 0.40 ms, GET /health (the gRPC hop alone) 0.30 ms" in text
    assert "0.9% of one core for /metrics and /slots at 10 Hz" in text
    assert ("steady state (every stream generating; 2.00 s of a scraped run): ratio median "
            "1.001") in text
    assert "engine blocked 1.50% unscraped, 2.00% scraped: +0.500 ms per GET (40 GETs)" in text
    assert "waiting for a core 10.00% unscraped, 20.00% scraped" in text


@pytest.mark.slow
def test_a_short_run_reports_throughput_and_cpu_per_scrape(tiny_bpe_path: Path) -> None:
    text = measure(tiny_bpe_path, 2, 16, 1, 1)
    assert "1 runs each" in text
    cpu = re.search(r"/metrics ([\d.]+) ms, /slots ([\d.]+) ms, GET /health .* ([\d.]+) ms;",
                    text)
    assert cpu is not None and all(float(v) > 0 for v in cpu.groups()), text
    assert re.search(r"median \d+\.\d{3}, middle half", text), text
    assert re.search(r"steady state .* ms per GET \(\d+ GETs\)", text), text
