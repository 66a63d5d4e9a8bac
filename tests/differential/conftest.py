"""Fixtures of the differential harness: the server pairs (started on first use, one pair per
flag set), and the run's summary, printed at the end of the session."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .pairs import Pairs
from .results import RESULTS


@pytest.fixture(scope="session")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pairs]:
    started = Pairs(tmp_path_factory.mktemp("differential"))
    yield started
    started.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if RESULTS.counts():
        terminalreporter.write_sep("=", "differential harness (llama-server vs ours)")
        for line in RESULTS.summary_lines():
            terminalreporter.write_line(line)
