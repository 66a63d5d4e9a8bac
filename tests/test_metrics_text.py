"""GET /metrics' text through templates (service/metrics_text.py) is byte for byte what
prometheus-client's generate_latest writes for the same families: for every shape (with and
without the speculative per-position counter, labels, odd floats), as values move scrape after
scrape; and a template refuses values that do not fit it."""

from __future__ import annotations

from collections.abc import Iterable

import pytest
from prometheus_client import generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from test_metrics_monitor import FakeScheduler, FakeStats, FakeTask

from service.engine.monitor import Monitor
from service.engine.slots import Slot
from service.metrics import MemoryBuffer, MemoryLedger, Metrics, families
from service.metrics_text import TextTemplate, sample_values


class Families(Collector):
    def __init__(self, found: list[Metric]) -> None:
        self.found = found

    def collect(self) -> Iterable[Metric]:
        return self.found


def reference(found: list[Metric]) -> str:
    return generate_latest(Families(found)).decode()


def shaped(values: list[float]) -> list[Metric]:
    """Families of one fixed shape holding `values` (9 values, 10 samples)."""
    counter = CounterMetricFamily("a:count", "with a \\ and a\nnewline", value=values[0])
    gauge = GaugeMetricFamily("b:gauge", "labelled", labels=["part", "memory"])
    gauge.add_metric(["kv \"cache\"", "host"], values[1])
    gauge.add_metric(["weights", "device"], values[2])
    hist = HistogramMetricFamily("c_seconds", "a histogram",
                                 buckets=[("0.1", values[3]), ("1.0", values[4]),
                                          ("+Inf", values[5])], sum_value=values[6])
    empty = GaugeMetricFamily("d:empty", "no samples", labels=["x"])
    return [counter, gauge, empty, hist, GaugeMetricFamily("e", "last", value=values[7]),
            CounterMetricFamily("f", "after", value=values[8])]


@pytest.mark.parametrize("values", [
    [0.0] * 9,
    [1.0, 2.5, 1e21, 3, 4, 5, 0.123456789012345678, float("inf"), -0.0],
    [12345678901234.0, float("nan"), float("-inf"), 1, 1, 2, 1e-9, 7.0, 2.0 ** 53],
])
def test_a_template_writes_what_generate_latest_writes(values: list[float]) -> None:
    template = TextTemplate(shaped([0.0] * 9))
    found = shaped(values)
    assert template.size == 10  # the histogram writes its count too
    assert template.render(sample_values(found)) == reference(found)


def test_a_template_of_no_samples_is_the_headers() -> None:
    found: list[Metric] = [GaugeMetricFamily("g", "none yet", labels=["x"])]
    assert TextTemplate(found).render([]) == reference(found)


def test_a_template_refuses_what_does_not_fit() -> None:
    template = TextTemplate(shaped([0.0] * 9))
    with pytest.raises(ValueError, match="10 samples"):
        template.render([1.0] * 8)
    created = CounterMetricFamily("h", "with created", value=1.0, created=5.0)
    with pytest.raises(ValueError, match="cannot place"):
        TextTemplate([created])


def engine_state() -> tuple[Monitor, FakeStats, FakeScheduler]:
    slots = [Slot(i) for i in range(4)]
    monitor = Monitor(slots, kv_cells_total=4096)
    sched, stats = FakeScheduler(), FakeStats()
    for i in range(2):
        task = FakeTask(slots[i], n_cached=3, n_past=50 + i, reserved=100, generated=[1, 2])
        slots[i].task, slots[i].cache_tokens = task, list(range(50 + i))
        sched.running.append(task)
        monitor.started(task)
    return monitor, stats, sched


def test_every_scrape_is_prometheus_client_s_text_of_the_families() -> None:
    monitor, stats, sched = engine_state()
    ledger = MemoryLedger.of([MemoryBuffer("model_weights", "CPU", "host", 1.5e8),
                              MemoryBuffer("compute", "CUDA0", "device", 3e6)],
                             {"kv_cache": 4e6})
    metrics = Metrics(ledger)
    for step in range(6):
        stats.n_decode_total += 1
        stats.prompt_tokens_total += 7
        stats.prompt_seconds_total += 0.01 * step
        stats.n_busy_slots_total += 2
        if step >= 3:  # drafting starts: the per-position counter appears, then grows
            stats.accepted_per_pos = [4, 2, step][:step - 1]
            stats.draft_tokens, stats.accepted_tokens = 10 * step, 6 * step
        monitor.sampled(sched.running, now=1.0 + 0.02 * step)
        monitor.publish(stats, sched)
        assert monitor.snapshot is not None
        resp = metrics.response(monitor.snapshot)
        text = resp.prometheus.data.decode()
        ours, sep, process = text.partition("# HELP llamagrpc_process_")
        assert sep and "llamagrpc_process_cpu_seconds_total" in process
        assert ours == reference(families(resp))
        if step >= 3:
            assert 'llamacpp:spec_decode_num_accepted_tokens_per_pos_total{position="1"}' in ours
        assert f"llamacpp:n_decode_total {float(step + 1)}\n" in ours


def test_one_template_scrape_after_scrape_writes_each_value_anew() -> None:
    """Values repeat between scrapes (the template keeps their text): 0.0 and -0.0, a value
    and its int, NaN, and more distinct values than it keeps, each as generate_latest."""
    template = TextTemplate(shaped([0.0] * 9))
    runs = [[0.0, -0.0, 0.0, 1, 1.0, 2, -0.0, 0.0, float("nan")],
            [-0.0, 0.0, -0.0, 1.0, 1, 2.0, 0.0, -0.0, float("nan")],
            *([float(i), i + 0.5, 1e21 + i, 3, 4, 5, i / 7, float(i), -i] for i in range(300))]
    for values in runs + runs[:2]:
        found = shaped(values)
        assert template.render(sample_values(found)) == reference(found)
