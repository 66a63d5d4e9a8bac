"""GET /metrics' process families (service/metrics_process.py): the values read per scrape are
prometheus-client's ProcessCollector's (same families, same arithmetic, same order), and the
text a Metrics writes for them is generate_latest's for the collector's families with those
values."""

from __future__ import annotations

import os
import resource

import pytest
from prometheus_client import ProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from test_metrics_text import reference

from service.metrics import MemoryLedger, Metrics
from service.metrics_process import ProcessMetrics
from service.metrics_text import sample_values

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="no /proc")


def test_values_are_the_collector_s() -> None:
    ours = ProcessMetrics("llamagrpc")
    collector = ProcessCollector(namespace="llamagrpc", registry=None)
    before = sample_values(collector.collect())
    values = ours.values()
    after = sample_values(collector.collect())
    assert values is not None and len(values) == len(before) == 6
    assert [f.name for f in ours.families] == [
        f"llamagrpc_process_{n}" for n in ("virtual_memory_bytes", "resident_memory_bytes",
                                           "start_time_seconds", "cpu_seconds", "open_fds",
                                           "max_fds")]
    vmem, rss, start, cpu, fds, max_fds = values
    # what does not move is equal; what moves lies between two of the collector's reads
    assert start == before[2] == after[2]
    assert max_fds == before[5] == float(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    assert before[3] <= cpu <= after[3]
    assert vmem > 0 and rss > 0 and fds >= 3
    for value, low, high in zip(values, before, after, strict=True):
        assert min(low, high) * 0.9 <= value <= max(low, high) * 1.1


def test_the_scrape_s_process_text_is_generate_latest_s() -> None:
    metrics = Metrics(MemoryLedger(()))
    process = ProcessMetrics("llamagrpc")
    for _ in range(3):  # the template is made once, then filled
        text = metrics._process_text()
        found = {f.name: f for f in text_string_to_metric_families(text)}
        assert set(found) == {f.name for f in process.families}
        # the same bytes as prometheus-client writes for the families with these values
        values = [s.value for f in found.values() for s in f.samples]
        for family, value in zip(process.families, values, strict=True):
            family.samples[0] = family.samples[0]._replace(value=value)
        assert text == reference(process.families)


def test_without_the_fast_read_the_collector_s_families_are_written(
        monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = Metrics(MemoryLedger(()))
    monkeypatch.setattr(metrics._process, "values", lambda: None)
    found = list(text_string_to_metric_families(metrics._process_text()))
    assert [f.name for f in found] == [f.name for f in metrics._process.families]
