"""GET /metrics (GetMetrics): the engine's published snapshot as Prometheus text and typed fields.

The `llamacpp:` names, types and meanings are the pinned llama-server's (tools/server:
server_task_result_metrics::to_metrics), plus `kv_cache_usage_ratio` and `kv_cache_tokens`,
which the spec documents. Two gauges are averages over the window since the previous scrape, as
llama-server's: `prompt_tokens_seconds` (prompt tokens over the decode time spent on prompts)
and `predicted_tokens_seconds` (over the requests that ended in the window: their tokens after
the first over their generation time, a per-stream rate). `n_tokens_max` is written as a gauge:
prometheus-client writes every counter's samples with a `_total` suffix, and the name is kept.

Ours, under `llamagrpc:`: time to first token, the time between two tokens of a request (one
engine step), queue wait (histograms, seconds), cancelled and finished requests, KV cells
reserved vs used, decodes redone for a burst, and the memory ledger: the bytes llama.cpp holds
for the model's weights, the KV cache, the compute buffers and the output buffer, in host or
device memory (`memory_bytes{part, memory}`), as llama.cpp logs them when it allocates them
(native.buffers; llama.h returns none of these sizes); plus the process's own memory and CPU
(prometheus-client's process collector).

Each server has its own CollectorRegistry (never the global one): several servers in one
process (tests) do not share metrics.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from llama.v1 import server_pb2
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from service.engine.monitor import EngineSnapshot, Histogram

CONTENT_TYPE = "text/plain; version=0.0.4"
# Bytes per element of the KV cache types (ggml block sizes / elements per block).
_KV_TYPE_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32,
                  "q4_1": 20 / 32, "iq4_nl": 18 / 32, "q5_0": 22 / 32, "q5_1": 24 / 32}


MEMORY_PARTS = ("model_weights", "kv_cache", "compute", "output")


@dataclass(frozen=True)
class MemoryBuffer:
    """One buffer llama.cpp holds: its part (MEMORY_PARTS), ggml's buffer type ("" for a computed
    figure), "host", "device" or "unknown" (computed), and its size in bytes."""

    part: str
    buffer_type: str
    memory: str
    bytes: float


@dataclass(frozen=True)
class MemoryLedger:
    """The memory llama.cpp holds, buffer by buffer."""

    buffers: tuple[MemoryBuffer, ...]

    @classmethod
    def of(cls, logged: Iterable[MemoryBuffer], computed: Mapping[str, float]) -> MemoryLedger:
        """The buffers llama.cpp logged, and a computed figure for each part it logged none of
        (a logged size is exact to its rounding; a computed one is an estimate)."""
        buffers = tuple(logged)
        have = {b.part for b in buffers}
        return cls(buffers + tuple(MemoryBuffer(part, "", "unknown", size)
                                   for part, size in computed.items()
                                   if part not in have and size > 0))

    def total(self, part: str) -> float:
        return float(sum(b.bytes for b in self.buffers if b.part == part))

    def message(self) -> server_pb2.MemoryLedger:
        return server_pb2.MemoryLedger(
            model_weights_bytes=self.total("model_weights"),
            kv_cache_bytes=self.total("kv_cache"), compute_bytes=self.total("compute"),
            output_bytes=self.total("output"),
            buffers=[server_pb2.MemoryBuffer(part=b.part, buffer_type=b.buffer_type,
                                             memory=b.memory, bytes=b.bytes)
                     for b in self.buffers])


def kv_cache_bytes(n_ctx: int, n_layer: int, n_embd: int, n_head: int, n_head_kv: int,
                   type_k: str, type_v: str) -> float:
    """The size of a full-attention KV cache of `n_ctx` cells (0 if a type is not known)."""
    if n_head <= 0 or type_k not in _KV_TYPE_BYTES or type_v not in _KV_TYPE_BYTES:
        return 0.0
    per_layer = n_head_kv * (n_embd // n_head)
    return float(n_ctx * n_layer * per_layer * (_KV_TYPE_BYTES[type_k] + _KV_TYPE_BYTES[type_v]))


@dataclass
class _Window:
    """The cumulative values at the previous scrape (llama-server's buckets)."""

    prompt_tokens: float = 0.0
    prompt_seconds: float = 0.0
    predicted_steps: float = 0.0
    predicted_seconds: float = 0.0


def _rate(count: float, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


class _SnapshotCollector(Collector):
    """Yields the families made for the scrape in progress."""

    def __init__(self) -> None:
        self.families: list[Metric] = []

    def collect(self) -> Iterable[Metric]:
        return list(self.families)


class Metrics:
    """One per server: its registry, and the previous scrape for the windowed gauges."""

    def __init__(self, memory: MemoryLedger) -> None:
        self.memory = memory
        self.registry = CollectorRegistry(auto_describe=False)
        self._collector = _SnapshotCollector()
        self.registry.register(self._collector)
        ProcessCollector(namespace="llamagrpc", registry=self.registry)
        self._window = _Window()
        self._lock = threading.Lock()

    def response(self, snap: EngineSnapshot) -> server_pb2.MetricsResponse:
        """The typed metrics and their Prometheus text, made from the same message; starts a
        new averaging window."""
        with self._lock:
            s, c = snap.stats, snap.counters
            w, now = self._window, _Window(s.prompt_tokens_total, s.prompt_seconds_total,
                                           c.predicted_steps_total, c.predicted_seconds_total)
            self._window = now
            kv_used = snap.kv_cells_used
            resp = server_pb2.MetricsResponse(
                prompt_tokens_total=s.prompt_tokens_total,
                prompt_seconds_total=s.prompt_seconds_total,
                tokens_predicted_total=s.tokens_predicted_total,
                tokens_predicted_seconds_total=c.predicted_seconds_total,
                prompt_tokens_seconds=_rate(now.prompt_tokens - w.prompt_tokens,
                                            now.prompt_seconds - w.prompt_seconds),
                predicted_tokens_seconds=_rate(now.predicted_steps - w.predicted_steps,
                                               now.predicted_seconds - w.predicted_seconds),
                kv_cache_usage_ratio=_rate(kv_used, snap.kv_cells_total),
                kv_cache_tokens=kv_used,
                requests_processing=sum(1 for slot in snap.slots if slot.busy),
                requests_deferred=snap.n_waiting,
                n_decode_total=s.n_decode_total,
                n_busy_slots_per_decode=s.n_busy_slots_total / max(s.n_decode_total, 1),
                n_tokens_max=snap.n_tokens_max,
                prompt_tokens_cached_total=c.prompt_tokens_cached_total,
                requests_cancelled_total=c.requests_cancelled_total,
                requests_finished_total=c.requests_finished_total,
                decodes_interrupted_total=s.decodes_interrupted,
                kv_cells_total=snap.kv_cells_total, kv_cells_used=kv_used,
                kv_cells_reserved=snap.kv_cells_reserved, slots_idle=snap.idle_slots,
                time_to_first_token=_histogram_msg(snap.ttft),
                inter_token_latency=_histogram_msg(snap.token_gap),
                queue_wait=_histogram_msg(snap.queue_wait),
                memory=self.memory.message(),
                spec_decode_num_draft_tokens_total=s.draft_tokens,
                spec_decode_num_accepted_tokens_total=s.accepted_tokens,
                spec_decode_num_drafts_total=s.verifications,
                spec_decode_num_accepted_tokens_per_pos=s.accepted_per_pos)
            self._collector.families = list(_families(resp, snap.n_waiting))
            resp.prometheus.content_type = CONTENT_TYPE
            resp.prometheus.data = generate_latest(self.registry)
            self._collector.families = []
        return resp


def _families(r: server_pb2.MetricsResponse, n_waiting: int) -> Iterator[Metric]:
    for name, doc, value in (
            ("prompt_tokens", "Number of prompt tokens processed, excluding cached tokens",
             r.prompt_tokens_total),
            ("prompt_tokens_cached", "Number of prompt tokens reused from the cache",
             r.prompt_tokens_cached_total),
            ("prompt_seconds", "Total time spent processing prompts", r.prompt_seconds_total),
            ("tokens_predicted", "Number of generation tokens processed",
             r.tokens_predicted_total),
            ("tokens_predicted_seconds", "Total time spent generating tokens",
             r.tokens_predicted_seconds_total),
            ("n_decode", "Total number of llama_decode() calls", r.n_decode_total),
            ("spec_decode_num_draft_tokens", "Speculative: Total draft tokens generated",
             r.spec_decode_num_draft_tokens_total),
            ("spec_decode_num_accepted_tokens",
             "Speculative: Total draft tokens accepted by the target model",
             r.spec_decode_num_accepted_tokens_total),
            ("spec_decode_num_drafts",
             "Speculative: Total speculative decoding verification steps",
             r.spec_decode_num_drafts_total)):
        yield CounterMetricFamily(f"llamacpp:{name}", doc, value=value)
    for name, doc, value in (
            ("n_tokens_max", "Largest observed sequence length (prompt + generation)",
             r.n_tokens_max),
            ("prompt_tokens_seconds", "Average prompt throughput in tokens/s",
             r.prompt_tokens_seconds),
            ("predicted_tokens_seconds", "Average generation throughput in tokens/s",
             r.predicted_tokens_seconds),
            ("kv_cache_usage_ratio", "KV-cache usage. 1 means 100 percent usage",
             r.kv_cache_usage_ratio),
            ("kv_cache_tokens", "KV-cache tokens", r.kv_cache_tokens),
            ("requests_processing", "Number of requests processing", r.requests_processing),
            ("requests_deferred", "Number of requests deferred", r.requests_deferred),
            ("n_busy_slots_per_decode", "Average number of busy slots per llama_decode() call",
             r.n_busy_slots_per_decode)):
        yield GaugeMetricFamily(f"llamacpp:{name}", doc, value=value)
    if r.spec_decode_num_accepted_tokens_per_pos:  # as llama-server: once anything was drafted
        per_pos = CounterMetricFamily("llamacpp:spec_decode_num_accepted_tokens_per_pos",
                                      "Accepted tokens per draft position", labels=["position"])
        for i, n in enumerate(r.spec_decode_num_accepted_tokens_per_pos):
            per_pos.add_metric([str(i)], n)
        yield per_pos
    yield from _ours(r, n_waiting)


def _ours(r: server_pb2.MetricsResponse, n_waiting: int) -> Iterator[Metric]:
    yield _histogram("time_to_first_token_seconds",
                     "Time from a request's arrival to its first generated token",
                     r.time_to_first_token)
    yield _histogram("inter_token_latency_seconds",
                     "Time between two generated tokens of a request", r.inter_token_latency)
    yield _histogram("queue_wait_seconds",
                     "Time a request waited for a slot and its KV reservation", r.queue_wait)
    for name, doc, value in (
            ("requests_cancelled", "Requests cancelled, waiting or running",
             r.requests_cancelled_total),
            ("requests_finished", "Requests that ended with a stop (eos, word, limit)",
             r.requests_finished_total),
            ("decodes_interrupted",
             "Prompt decodes interrupted and redone with a burst's newer requests",
             r.decodes_interrupted_total)):
        yield CounterMetricFamily(f"llamagrpc:{name}", doc, value=value)
    for name, doc, value in (
            ("kv_cells_total", "KV cache cells of the context", r.kv_cells_total),
            ("kv_cells_used", "KV cells holding tokens (running and cached prompts)",
             r.kv_cells_used),
            ("kv_cells_reserved",
             "KV cells reserved by running requests (prompt + n_predict each)",
             r.kv_cells_reserved),
            ("requests_waiting", "Requests waiting for a slot or KV cells", n_waiting),
            ("slots_idle", "Slots with no request", r.slots_idle)):
        yield GaugeMetricFamily(f"llamagrpc:{name}", doc, value=value)
    yield _memory(r.memory)


def _memory(ledger: server_pb2.MemoryLedger) -> Metric:
    """Every part in host and device memory (0 included, so that the series stay put), and in
    "unknown" where a part's figure is computed."""
    memory = GaugeMetricFamily(
        "llamagrpc:memory_bytes", "Memory llama.cpp holds, by part and where: the sizes it "
        "logs as it allocates its buffers (memory=unknown: computed, none logged)",
        labels=["part", "memory"])
    sums = {(part, where): 0.0 for part in MEMORY_PARTS for where in ("host", "device")}
    for b in ledger.buffers:
        sums[b.part, b.memory] = sums.get((b.part, b.memory), 0.0) + b.bytes
    for (part, where), size in sums.items():
        memory.add_metric([part, where], size)
    return memory


def _histogram_msg(h: Histogram) -> server_pb2.LatencyHistogram:
    counts, total = h.read()
    cumulative, running = [], 0
    for n in counts:
        running += n
        cumulative.append(float(running))
    return server_pb2.LatencyHistogram(bounds=h.bounds, cumulative_counts=cumulative,
                                       sum=total)


def _histogram(name: str, doc: str, h: server_pb2.LatencyHistogram) -> Metric:
    bounds = [repr(b) for b in h.bounds] + ["+Inf"]
    return HistogramMetricFamily(f"llamagrpc:{name}", doc,
                                 buckets=list(zip(bounds, h.cumulative_counts, strict=True)),
                                 sum_value=h.sum)
