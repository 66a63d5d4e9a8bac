"""Unit tests of the pure parts behind /metrics and /slots: the engine's monitor (histograms, the
published snapshot, its hooks) and the Prometheus rendering of a snapshot, with plain objects
standing in for the engine's tasks and scheduler."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.engine.monitor import Histogram, Monitor
from service.engine.slots import Slot
from service.engine.speculation import SpecStats
from service.metrics import MemoryBuffer, MemoryLedger, Metrics, kv_cache_bytes


@dataclass
class FakeTask:
    slot: Slot
    submitted: float = 0.0
    t_start: float = 0.5
    t_first: float = 0.0
    n_cached: int = 0
    n_past: int = 0
    reserved: int = 0
    generated: list[int] = field(default_factory=list)


@dataclass
class FakeScheduler:
    running: list[Any] = field(default_factory=list)
    waiting: list[Any] = field(default_factory=list)


@dataclass
class FakeStats(SpecStats):  # the engine's counters, speculative decoding's among them
    prompt_tokens_total: int = 0
    prompt_seconds_total: float = 0.0
    tokens_predicted_total: int = 0
    n_decode_total: int = 0
    n_busy_slots_total: int = 0
    decodes_interrupted: int = 0


def test_histogram_buckets_are_upper_bounds() -> None:
    h = Histogram((0.1, 1.0))
    h.observe(0.1)  # on a bound: that bucket (le="0.1")
    h.observe(0.5, n=3)
    h.observe(7.0)
    counts, total = h.read()
    assert counts == (1, 3, 1)
    assert total == pytest.approx(0.1 + 1.5 + 7.0)


def test_snapshot_follows_the_hooks() -> None:
    slots = [Slot(0), Slot(1)]
    monitor = Monitor(slots, kv_cells_total=64)
    sched, stats = FakeScheduler(), FakeStats()
    monitor.publish(stats, sched)
    snap = monitor.snapshot
    assert snap is not None and snap.idle_slots == 2 and snap.kv_cells_used == 0

    task = FakeTask(slots[1], submitted=0.0, t_start=0.25, n_cached=3, n_past=10, reserved=20)
    slots[1].task, slots[1].cache_tokens = task, list(range(10))
    sched.running.append(task)
    monitor.started(task)
    task.generated.append(5)
    task.t_first = 0.75
    monitor.sampled([task], now=1.0)  # its first token: time to first token 0.75
    task.generated.append(6)
    monitor.sampled([task], now=1.2)  # one step later
    stats.tokens_predicted_total = 2
    monitor.publish(stats, sched)
    snap = monitor.snapshot
    assert snap is not None
    assert [s.busy for s in snap.slots] == [False, True] and snap.slots[1].task is task
    assert (snap.kv_cells_used, snap.kv_cells_reserved) == (10, 20)
    assert snap.counters.prompt_tokens_cached_total == 3
    assert snap.n_tokens_max == 10
    assert snap.queue_wait.read() == ((0,) * 5 + (1,) + (0,) * 9, 0.25)  # le="0.25"
    assert sum(snap.ttft.read()[0]) == 1 and snap.ttft.read()[1] == pytest.approx(0.75)
    assert sum(snap.token_gap.read()[0]) == 1
    assert snap.token_gap.read()[1] == pytest.approx(0.2)
    assert snap.stats.tokens_predicted_total == 2 and snap.stats is not stats  # a copy

    slots[1].task = None
    sched.running.clear()
    monitor.ended(task, finished=True)
    monitor.cancelled(2)
    monitor.publish(stats, sched)
    snap = monitor.snapshot
    assert snap is not None
    assert not snap.slots[1].busy and snap.slots[1].task is task  # the last one it ran
    assert snap.counters.requests_finished_total == 1
    assert snap.counters.requests_cancelled_total == 2
    assert snap.counters.predicted_steps_total == 1


def test_kv_cache_bytes() -> None:
    # 2 layers, 4 heads of 8 dims, 2 KV heads: 16 values a cell and layer for K, 16 for V.
    assert kv_cache_bytes(100, 2, 32, 4, 2, "f16", "f16") == 100 * 2 * 16 * 4
    assert kv_cache_bytes(100, 2, 32, 4, 2, "q8_0", "f32") == 100 * 2 * 16 * (34 / 32 + 4)
    assert kv_cache_bytes(100, 2, 32, 4, 2, "mystery", "f16") == 0


def test_rendered_text_and_windowed_rates() -> None:
    slots = [Slot(0)]
    monitor = Monitor(slots, kv_cells_total=32)
    stats, sched = FakeStats(prompt_tokens_total=100, prompt_seconds_total=0.5), FakeScheduler()
    monitor.ttft.observe(0.02)
    monitor.publish(stats, sched)
    ledger = MemoryLedger.of(
        [MemoryBuffer("model_weights", "CUDA0", "device", 900.0),
         MemoryBuffer("model_weights", "CPU_Mapped", "host", 100.0),
         MemoryBuffer("compute", "CUDA0", "device", 50.0),
         MemoryBuffer("compute", "CUDA_Host", "host", 5.0)],
        {"model_weights": 7.0, "kv_cache": 200.0})
    metrics = Metrics(ledger)
    snap = monitor.snapshot
    assert snap is not None
    first = metrics.response(snap)
    assert first.prompt_tokens_seconds == pytest.approx(200.0)
    families = {f.name: f for f in text_string_to_metric_families(
        first.prometheus.data.decode())}
    ttft = families["llamagrpc:time_to_first_token_seconds"]
    buckets = {s.labels["le"]: s.value for s in ttft.samples if s.name.endswith("_bucket")}
    assert buckets["0.01"] == 0 and buckets["0.025"] == 1 and buckets["+Inf"] == 1
    memory = {(s.labels["part"], s.labels["memory"]): s.value
              for s in families["llamagrpc:memory_bytes"].samples}
    # Logged weights win over the computed 7; the KV cache, logged by none, is computed.
    assert memory == {("model_weights", "host"): 100.0, ("model_weights", "device"): 900.0,
                      ("kv_cache", "host"): 0.0, ("kv_cache", "device"): 0.0,
                      ("kv_cache", "unknown"): 200.0, ("compute", "host"): 5.0,
                      ("compute", "device"): 50.0, ("output", "host"): 0.0,
                      ("output", "device"): 0.0}
    typed = first.memory
    assert (typed.model_weights_bytes, typed.kv_cache_bytes, typed.compute_bytes,
            typed.output_bytes) == (1000.0, 200.0, 55.0, 0.0)
    assert [(b.part, b.buffer_type, b.memory) for b in typed.buffers][-1] == (
        "kv_cache", "", "unknown")
    stats.prompt_tokens_total, stats.prompt_seconds_total = 130, 0.6
    monitor.publish(stats, sched)
    snap = monitor.snapshot
    assert snap is not None
    assert metrics.response(snap).prompt_tokens_seconds == pytest.approx(300.0)  # 30 in 0.1 s
