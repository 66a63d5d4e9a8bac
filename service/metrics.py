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

Each server has its own Metrics and process collector (never prometheus-client's global
registry): several servers in one process (tests) do not share metrics. What a scrape costs, and
why the text is rendered through templates: service/metrics_text.py, docs/api.md.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from llama.v1 import server_pb2
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from service.engine.monitor import EngineSnapshot, Histogram
from service.metrics_process import ProcessMetrics
from service.metrics_text import TextTemplate, sample_values

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


# The scalar families: (type, name, help, the MetricsResponse field that holds the value), in
# the order the text writes them; llama-server's before the speculative per-position counter,
# ours (under llamagrpc:, after the histograms) after it.
_Scalar = tuple[str, str, str, str]
_LLAMACPP: tuple[_Scalar, ...] = (
    ("counter", "prompt_tokens", "Number of prompt tokens processed, excluding cached tokens",
     "prompt_tokens_total"),
    ("counter", "prompt_tokens_cached", "Number of prompt tokens reused from the cache",
     "prompt_tokens_cached_total"),
    ("counter", "prompt_seconds", "Total time spent processing prompts", "prompt_seconds_total"),
    ("counter", "tokens_predicted", "Number of generation tokens processed",
     "tokens_predicted_total"),
    ("counter", "tokens_predicted_seconds", "Total time spent generating tokens",
     "tokens_predicted_seconds_total"),
    ("counter", "n_decode", "Total number of llama_decode() calls", "n_decode_total"),
    ("counter", "spec_decode_num_draft_tokens", "Speculative: Total draft tokens generated",
     "spec_decode_num_draft_tokens_total"),
    ("counter", "spec_decode_num_accepted_tokens",
     "Speculative: Total draft tokens accepted by the target model",
     "spec_decode_num_accepted_tokens_total"),
    ("counter", "spec_decode_num_drafts",
     "Speculative: Total speculative decoding verification steps",
     "spec_decode_num_drafts_total"),
    ("gauge", "n_tokens_max", "Largest observed sequence length (prompt + generation)",
     "n_tokens_max"),
    ("gauge", "prompt_tokens_seconds", "Average prompt throughput in tokens/s",
     "prompt_tokens_seconds"),
    ("gauge", "predicted_tokens_seconds", "Average generation throughput in tokens/s",
     "predicted_tokens_seconds"),
    ("gauge", "kv_cache_usage_ratio", "KV-cache usage. 1 means 100 percent usage",
     "kv_cache_usage_ratio"),
    ("gauge", "kv_cache_tokens", "KV-cache tokens", "kv_cache_tokens"),
    ("gauge", "requests_processing", "Number of requests processing", "requests_processing"),
    ("gauge", "requests_deferred", "Number of requests deferred", "requests_deferred"),
    ("gauge", "n_busy_slots_per_decode", "Average number of busy slots per llama_decode() call",
     "n_busy_slots_per_decode"))
_HISTOGRAMS = (
    ("time_to_first_token_seconds", "Time from a request's arrival to its first generated token",
     "time_to_first_token"),
    ("inter_token_latency_seconds", "Time between two generated tokens of a request",
     "inter_token_latency"),
    ("queue_wait_seconds", "Time a request waited for a slot and its KV reservation",
     "queue_wait"))
_OURS: tuple[_Scalar, ...] = (
    ("counter", "requests_cancelled", "Requests cancelled, waiting or running",
     "requests_cancelled_total"),
    ("counter", "requests_finished", "Requests that ended with a stop (eos, word, limit)",
     "requests_finished_total"),
    ("counter", "decodes_interrupted",
     "Prompt decodes interrupted and redone with a burst's newer requests",
     "decodes_interrupted_total"),
    ("gauge", "kv_cells_total", "KV cache cells of the context", "kv_cells_total"),
    ("gauge", "kv_cells_used", "KV cells holding tokens (running and cached prompts)",
     "kv_cells_used"),
    ("gauge", "kv_cells_reserved",
     "KV cells reserved by running requests (prompt + n_predict each)", "kv_cells_reserved"),
    ("gauge", "requests_waiting", "Requests waiting for a slot or KV cells", "requests_deferred"),
    ("gauge", "slots_idle", "Slots with no request", "slots_idle"))


class Metrics:
    """One per server: the previous scrape (for the windowed gauges) and the text templates.

    The text is prometheus-client's (generate_latest's bytes), rendered through a TextTemplate
    per shape (service.metrics_text): a scrape writes the values only. The memory ledger's
    typed message and values are made once: llama.cpp allocates its buffers at load."""

    def __init__(self, memory: MemoryLedger) -> None:
        self.memory = memory
        self._memory_msg = memory.message()
        self._memory_values = sample_values([_memory(self._memory_msg)])
        self._process = ProcessMetrics("llamagrpc")
        # by the number of speculative positions (the one part whose shape changes)
        self._templates: dict[int, TextTemplate] = {}
        self._process_templates: dict[tuple[tuple[str, int], ...], TextTemplate] = {}
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
                memory=self._memory_msg,
                spec_decode_num_draft_tokens_total=s.draft_tokens,
                spec_decode_num_accepted_tokens_total=s.accepted_tokens,
                spec_decode_num_drafts_total=s.verifications,
                spec_decode_num_accepted_tokens_per_pos=s.accepted_per_pos)
            resp.prometheus.content_type = CONTENT_TYPE
            resp.prometheus.data = (self._engine_text(resp) + self._process_text()).encode()
        return resp

    def _engine_text(self, r: server_pb2.MetricsResponse) -> str:
        n_pos = len(r.spec_decode_num_accepted_tokens_per_pos)
        template = self._templates.get(n_pos)
        if template is None:
            template = self._templates[n_pos] = TextTemplate(families(r))
        return template.render(_values(r, self._memory_values))

    def _process_text(self) -> str:
        """prometheus-client's process collector (llamagrpc_process_*): read each scrape."""
        values = self._process.values()
        found = self._process.families if values is not None else list(
            self._process.collector.collect())
        shape = tuple((f.name, len(f.samples)) for f in found)
        template = self._process_templates.get(shape)
        if template is None:
            template = self._process_templates[shape] = TextTemplate(found)
        return template.render(values if values is not None else sample_values(found))


def _values(r: server_pb2.MetricsResponse, memory: list[float]) -> list[float]:
    """The samples of `families(r)`, in order, read from the message without making them."""
    out = [float(getattr(r, field)) for _, _, _, field in _LLAMACPP]
    out += r.spec_decode_num_accepted_tokens_per_pos
    for _, _, field in _HISTOGRAMS:
        h = getattr(r, field)
        out += h.cumulative_counts
        out += (h.cumulative_counts[-1], h.sum)
    out += [float(getattr(r, field)) for _, _, _, field in _OURS]
    out += memory
    return out


def families(r: server_pb2.MetricsResponse) -> list[Metric]:
    """Every family the text holds but the process's, as prometheus-client's objects: what a
    TextTemplate is made from (and what a test renders with generate_latest to compare)."""
    out: list[Metric] = [_scalar("llamacpp", spec, r) for spec in _LLAMACPP]
    if r.spec_decode_num_accepted_tokens_per_pos:  # as llama-server: once anything was drafted
        per_pos = CounterMetricFamily("llamacpp:spec_decode_num_accepted_tokens_per_pos",
                                      "Accepted tokens per draft position", labels=["position"])
        for i, n in enumerate(r.spec_decode_num_accepted_tokens_per_pos):
            per_pos.add_metric([str(i)], n)
        out.append(per_pos)
    out += [_histogram(name, doc, getattr(r, field)) for name, doc, field in _HISTOGRAMS]
    out += [_scalar("llamagrpc", spec, r) for spec in _OURS]
    out.append(_memory(r.memory))
    return out


def _scalar(prefix: str, spec: _Scalar, r: server_pb2.MetricsResponse) -> Metric:
    kind, name, doc, field = spec
    family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
    return family(f"{prefix}:{name}", doc, value=getattr(r, field))


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
