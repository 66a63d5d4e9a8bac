"""Graceful shutdown of llama-grpc-server on SIGTERM: NOT_SERVING at once, new calls refused
with UNAVAILABLE, running streams finish (bounded by --drain-timeout), exit status 0."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_harness import NOT_SERVING, ServiceProcess, completion_request, free_port
from grpc_health.v1 import health_pb2
from llama.v1 import tokenize_pb2

from service.drain import SHUTTING_DOWN

pytestmark = pytest.mark.slow
EXIT_TIMEOUT_S = 30.0


def start(model: Path, *flags: str) -> ServiceProcess:
    # --port: the REST bridge child of each test server gets a port of its own
    return ServiceProcess.start(model, "--port", str(free_port()), *flags, parallel=1)


def test_sigterm_lets_running_stream_finish_and_refuses_new_calls(tiny_bpe_path: Path) -> None:
    svc = start(tiny_bpe_path, "--drain-timeout", "60")
    try:
        stub, health = svc.stub(), svc.health()
        call = stub.Completion(completion_request(prompt="drain", n_predict=400, ignore_eos=True,
                                                  temperature=0), timeout=60)
        stream = iter(call)
        first = next(stream)  # running: accepted and counted before the signal
        svc.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        status = None
        while time.monotonic() < deadline:
            status = health.Check(health_pb2.HealthCheckRequest(service="llama.v1.LlamaServer"),
                                  timeout=2).status
            if status == NOT_SERVING:
                break
            time.sleep(0.02)
        assert status == NOT_SERVING
        with pytest.raises(grpc.RpcError) as refused:
            stub.Tokenize(tokenize_pb2.TokenizeRequest(content="late"), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert refused.value.details() == SHUTTING_DOWN
        rest = list(stream)
        assert call.code() == grpc.StatusCode.OK
        assert {m.id for m in rest} == {first.id}
        assert rest[-1].stop and rest[-1].stop_type == "limit"
        assert rest[-1].tokens_predicted == 400
        assert svc.proc.wait(EXIT_TIMEOUT_S) == 0
    finally:
        svc.stop()


def test_drain_timeout_bounds_the_wait(tiny_bpe_path: Path) -> None:
    svc = start(tiny_bpe_path, "-c", "4096", "--drain-timeout", "1")
    try:
        stub = svc.stub()
        call = stub.Completion(completion_request(prompt="long", n_predict=4000, ignore_eos=True,
                                                  temperature=0), timeout=120)
        stream = iter(call)
        next(stream)
        signalled = time.monotonic()
        svc.proc.send_signal(signal.SIGTERM)
        messages: list[Any] = []
        with pytest.raises(grpc.RpcError) as ended:
            messages.extend(stream)
        assert svc.proc.wait(EXIT_TIMEOUT_S) == 0
        took = time.monotonic() - signalled
        assert took < 15.0, f"exit took {took:.1f}s with --drain-timeout 1"
        # cut short: the stream did not reach its end
        assert ended.value.code() != grpc.StatusCode.OK
        assert not any(m.stop and m.stop_type == "limit" for m in messages)
    finally:
        svc.stop()


def test_sigterm_while_idle_exits_at_once(tiny_bpe_path: Path) -> None:
    svc = start(tiny_bpe_path, "--drain-timeout", "60")
    try:
        signalled = time.monotonic()
        svc.proc.send_signal(signal.SIGTERM)
        assert svc.proc.wait(EXIT_TIMEOUT_S) == 0
        assert time.monotonic() - signalled < 10.0
    finally:
        svc.stop()
