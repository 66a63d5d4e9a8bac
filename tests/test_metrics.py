"""GET /metrics (GetMetrics) over real gRPC and through the REST bridge: the Prometheus text parses
(prometheus_client's parser), carries the pinned llama-server's `llamacpp:` metrics and ours, its
counters move after requests, and the typed fields say what the text says. Without --metrics,
--slots (i.e. with --no-slots) or --props, the endpoints answer llama-server's errors.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from cancel_harness import DEADLINE_S, POLL_PACE_S, wait_load
from grpc_harness import ServiceProcess, complete, completion_request, free_port
from llama.v1 import server_pb2
from prometheus_client.parser import text_string_to_metric_families

# The pinned llama-server's metrics (server_task_result_metrics::to_metrics) and the two the
# spec documents from earlier versions.
LLAMACPP = ("prompt_tokens_total", "prompt_tokens_cached_total", "prompt_seconds_total",
            "tokens_predicted_total", "tokens_predicted_seconds_total", "n_decode_total",
            "n_tokens_max", "spec_decode_num_draft_tokens_total",
            "spec_decode_num_accepted_tokens_total", "spec_decode_num_drafts_total",
            "prompt_tokens_seconds", "predicted_tokens_seconds", "requests_processing",
            "requests_deferred", "n_busy_slots_per_decode", "kv_cache_usage_ratio",
            "kv_cache_tokens")
OURS_HISTOGRAMS = ("time_to_first_token_seconds", "inter_token_latency_seconds",
                   "queue_wait_seconds")


class Server:
    """A service with its REST bridge on a known port."""

    def __init__(self, svc: ServiceProcess, port: int) -> None:
        self.svc, self.url = svc, f"http://127.0.0.1:{port}"
        self.stub = svc.stub()


def start(model: Path, *flags: str, parallel: int = 2, ctx: int = 1024) -> Server:
    """The service (gRPC) and its REST bridge child, once both answer."""
    port = free_port()
    svc = ServiceProcess.start(model, *flags, "--port", str(port), ctx=ctx, parallel=parallel)
    try:
        wait_until(lambda: _bridge_up(port), "the REST bridge answers /health", svc.log)
    except BaseException:
        svc.stop()
        raise
    return Server(svc, port)


def _bridge_up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def wait_until(cond: Callable[[], bool], what: str, log: Callable[[], str] = str) -> None:
    """Poll `cond` until it holds (bounded by DEADLINE_S, a failure beyond)."""
    deadline = time.monotonic() + DEADLINE_S
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {DEADLINE_S}s\n{log()[-3000:]}")
        time.sleep(POLL_PACE_S)


@pytest.fixture(scope="module")
def server(tiny_bpe_path: Path) -> Iterator[Server]:
    s = start(tiny_bpe_path, "--metrics", "--context-shift")
    yield s
    s.svc.stop()


def samples(text: str) -> dict[str, float]:
    """Every sample of the exposition by name (labels in the name), parsed by the reference
    parser."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def scrape(stub: Any) -> tuple[Any, dict[str, float]]:
    resp = stub.GetMetrics(server_pb2.GetMetricsRequest(), timeout=30)
    assert resp.prometheus.content_type == "text/plain; version=0.0.4"
    return resp, samples(resp.prometheus.data.decode())


def test_every_metric_is_there_and_parses(server: Server) -> None:
    resp, s = scrape(server.stub)
    for name in LLAMACPP:
        assert f"llamacpp:{name}" in s, name
    for name in OURS_HISTOGRAMS:
        assert f"llamagrpc:{name}_count" in s and f"llamagrpc:{name}_sum" in s, name
        assert f"llamagrpc:{name}_bucket{{le=+Inf}}" in s, name
    for name in ("requests_cancelled_total", "requests_finished_total", "kv_cells_total",
                 "kv_cells_used", "kv_cells_reserved", "requests_waiting", "slots_idle"):
        assert f"llamagrpc:{name}" in s, name
    for part in ("model_weights", "kv_cache", "compute", "output"):
        assert sum(s[f"llamagrpc:memory_bytes{{memory={where},part={part}}}"]
                   for where in ("host", "device")) > 0, part
    assert s["llamagrpc:kv_cells_total"] == 1024
    assert "llamagrpc_process_resident_memory_bytes" in s
    # The typed fields are the text's numbers.
    assert resp.kv_cache_tokens == s["llamacpp:kv_cache_tokens"]
    assert resp.n_decode_total == s["llamacpp:n_decode_total"]
    assert resp.requests_finished_total == s["llamagrpc:requests_finished_total"]
    assert resp.kv_cells_total == 1024 and resp.memory.model_weights_bytes > 0
    ttft = resp.time_to_first_token
    assert len(ttft.cumulative_counts) == len(ttft.bounds) + 1
    assert ttft.cumulative_counts[-1] == s["llamagrpc:time_to_first_token_seconds_count"]
    assert ttft.sum == s["llamagrpc:time_to_first_token_seconds_sum"]


def test_counters_move_after_a_request(server: Server) -> None:
    _, before = scrape(server.stub)
    r = complete(server.stub, prompt="The metrics of a server", n_predict=8, ignore_eos=True,
                 cache_prompt=False, temperature=0.0)
    assert r.code == grpc.StatusCode.OK, r.details
    n_prompt = r.final.tokens_evaluated
    resp, after = scrape(server.stub)

    def moved(name: str) -> float:
        return after[name] - before[name]

    assert moved("llamacpp:prompt_tokens_total") == n_prompt
    assert moved("llamacpp:tokens_predicted_total") == 8
    assert moved("llamacpp:n_decode_total") >= 8  # the prompt, then one per token after it
    assert moved("llamacpp:prompt_seconds_total") > 0
    assert moved("llamacpp:tokens_predicted_seconds_total") > 0
    assert moved("llamagrpc:requests_finished_total") == 1
    assert moved("llamagrpc:time_to_first_token_seconds_count") == 1
    assert moved("llamagrpc:queue_wait_seconds_count") == 1
    assert moved("llamagrpc:inter_token_latency_seconds_count") == 7  # tokens after the first
    assert after["llamacpp:n_tokens_max"] >= n_prompt + 7
    assert after["llamacpp:requests_processing"] == 0
    # The windowed rates cover this request (the previous scrape opened the window).
    assert resp.prompt_tokens_seconds > 0 and resp.predicted_tokens_seconds > 0
    # A scrape with nothing done since averages over nothing.
    again, _ = scrape(server.stub)
    assert again.prompt_tokens_seconds == 0 and again.predicted_tokens_seconds == 0


def test_gauges_while_running_and_cancellations(server: Server, open_stream: Any) -> None:
    _, before = scrape(server.stub)
    reader = open_stream(server.stub.Completion(completion_request(
        prompt="running while scraped", n_predict=-1, ignore_eos=True, temperature=0.0)))
    wait_load(server.stub, lambda load: load.n_processing == 1, "the request is running")
    _, during = scrape(server.stub)
    assert during["llamacpp:requests_processing"] == 1
    assert during["llamagrpc:slots_idle"] == 1
    assert during["llamagrpc:kv_cells_reserved"] == 512  # unlimited: a whole slot
    assert 0 < during["llamacpp:kv_cache_tokens"] <= during["llamagrpc:kv_cells_total"]
    assert during["llamacpp:kv_cache_usage_ratio"] == pytest.approx(
        during["llamacpp:kv_cache_tokens"] / 1024)
    reader.cancel()
    cancelled = "llamagrpc:requests_cancelled_total"
    # The snapshot is published at the end of the engine's loop turn that reaped the request.
    wait_until(lambda: scrape(server.stub)[1][cancelled] == before[cancelled] + 1,
               "the cancellation is counted")
    _, after = scrape(server.stub)
    assert after["llamacpp:requests_processing"] == 0
    assert after["llamagrpc:kv_cells_reserved"] == 0


def test_memory_ledger_is_llama_cpp_s_own_figures(server: Server) -> None:
    """The compute and output buffers are there, in host or device memory, as are the weights
    and the KV cache: all as llama.cpp logged them, so none is a computed estimate."""
    text = httpx.get(server.url + "/metrics", timeout=30).text
    memory = {(m.labels["part"], m.labels["memory"]): m.value
              for family in text_string_to_metric_families(text)
              if family.name == "llamagrpc:memory_bytes" for m in family.samples}
    assert {where for _, where in memory} == {"host", "device"}  # no "unknown": none computed
    compute = memory["compute", "host"] + memory["compute", "device"]
    assert compute > 0
    ledger = server.stub.GetMetrics(server_pb2.GetMetricsRequest(), timeout=30).memory
    assert ledger.compute_bytes == compute
    assert ledger.output_bytes == memory["output", "host"] + memory["output", "device"] > 0
    # f16 K and V for 1024 cells of the tiny model (2 layers, 2 KV heads of 16 dimensions):
    # logged as 0.25 MiB, which is exact.
    assert ledger.kv_cache_bytes == 1024 * 2 * (2 * 16) * 2 * 2
    assert ledger.model_weights_bytes > 0
    assert {b.part for b in ledger.buffers} == {"model_weights", "kv_cache", "compute",
                                                "output"}
    assert all(b.buffer_type and b.memory in ("host", "device") and b.bytes > 0
               for b in ledger.buffers)
    assert sum(b.bytes for b in ledger.buffers if b.part == "compute") == compute


def test_metrics_over_rest(server: Server) -> None:
    r = httpx.get(server.url + "/metrics", timeout=30)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    s = samples(r.text)
    assert all(f"llamacpp:{name}" in s for name in LLAMACPP)


# -- endpoints off -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def plain(tiny_bpe_path: Path) -> Iterator[Server]:
    s = start(tiny_bpe_path, "--no-slots")
    yield s
    s.svc.stop()


@pytest.mark.parametrize(("rpc", "request_", "message"), [
    ("GetMetrics", server_pb2.GetMetricsRequest(),
     "This server does not support metrics endpoint. Start it with `--metrics`"),
    ("ListSlots", server_pb2.ListSlotsRequest(),
     "This server does not support slots endpoint. Start it with `--slots`"),
    ("SetProps", server_pb2.SetPropsRequest(),
     "This server does not support changing global properties. Start it with `--props`"),
])
def test_disabled_endpoints_over_grpc(plain: Server, rpc: str, request_: Any,
                                      message: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        getattr(plain.stub, rpc)(request_, timeout=30)
    err: Any = info.value
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED
    assert err.details() == message


@pytest.mark.parametrize(("method", "path", "message"), [
    ("GET", "/metrics", "Start it with `--metrics`"),
    ("GET", "/slots", "Start it with `--slots`"),
    ("POST", "/props", "Start it with `--props`"),
])
def test_disabled_endpoints_over_rest(plain: Server, method: str, path: str,
                                      message: str) -> None:
    r = httpx.request(method, plain.url + path, json={} if method == "POST" else None,
                      timeout=30)
    assert r.status_code == 501
    error = r.json()["error"]
    assert error["code"] == 501 and error["type"] == "not_supported_error"
    assert message in error["message"]
