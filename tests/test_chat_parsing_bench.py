"""bench/chat_parsing.py (issue 18's performance item) runs end to end in a minimal mode, so
that it does not rot: both scenarios report their figures (no figure is asserted: timings on a
shared machine are noise at this size)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_chat_parsing_bench_reports_both_scenarios(tiny_bpe_path: Path) -> None:
    cmd = [sys.executable, "-m", "bench.chat_parsing", "--model", str(tiny_bpe_path),
           "--tokens", "24", "--reps", "2", "--words", "20"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    # the same tokens on both sides: the A/B compares parsing alone
    counts = re.search(r"tokens per run: A \[(\d+)\], B \[(\d+)\]", out)
    assert counts and counts[1] == counts[2], out
    assert re.search(r"B / A - 1 = [+-]\d+\.\d+%", out) and "us/token" in out, out
    assert "choices' prompt_n [1, 1, 1, " in out, out  # n 4: the prompt decoded once
