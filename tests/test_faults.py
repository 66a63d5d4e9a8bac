"""Issue 22, item 6: faults. The engine thread raising unexpectedly fails its requests with a
clear error and the process exits non-zero (so that a supervisor restarts it), never a silent
hang; SIGTERM drains a stream running through the REST bridge as it drains gRPC's
(tests/test_graceful_shutdown.py), while new requests are refused. SIGKILL of a replica behind
Envoy: tests/test_envoy_replicas.py.

The engine fault is injected with the test hook LLAMA_GRPC_TEST_ENGINE_FAULT_AT_STEP=N
(service/engine/engine.py: the Nth step of the engine loop raises RuntimeError)."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from envoy_harness import wait_until
from grpc_harness import ServiceProcess, complete, completion_request
from rest.rest_harness import RestServer

import native
from native.context import ContextParams
from service.cli import ENGINE_FAILED_EXIT
from service.engine.engine import FAULT_AT_STEP_ENV, Engine, EngineStoppedError
from service.engine.events import Event, Failed
from service.engine.params import CompletionParams, SamplingParams
from service.engine.task import Task

pytestmark = pytest.mark.slow
EXIT_TIMEOUT_S = 60.0
FAULT_STEP = 300  # well after the first stream's first tokens, so that a second one waits


def test_engine_fault_fails_requests_and_exits_non_zero(tiny_bpe_path: Path) -> None:
    svc = ServiceProcess.start(tiny_bpe_path, parallel=1, env={FAULT_AT_STEP_ENV: str(FAULT_STEP)})
    try:
        stub = svc.stub()
        running = stub.Completion(completion_request(
            prompt="fault", n_predict=2_000, ignore_eos=True, temperature=0), timeout=60)
        stream = iter(running)
        next(stream)  # it holds the only slot
        waiting: dict[str, Any] = {}
        second = threading.Thread(target=lambda: waiting.update(r=complete(
            stub, prompt="queued", n_predict=4)))
        second.start()
        with pytest.raises(grpc.RpcError) as failed:
            list(stream)
        assert failed.value.code() == grpc.StatusCode.INTERNAL
        assert "engine stopped after an internal error" in (failed.value.details() or "")
        assert "fault injected" in (failed.value.details() or "")
        second.join(EXIT_TIMEOUT_S)
        assert waiting["r"].code == grpc.StatusCode.UNAVAILABLE, waiting["r"].details
        assert svc.proc.wait(EXIT_TIMEOUT_S) == ENGINE_FAILED_EXIT
        log = svc.log()
        assert "the engine thread stopped: RuntimeError" in log
        assert f"exiting with status {ENGINE_FAILED_EXIT}" in log
    finally:
        svc.stop()


class _Sink:
    def __init__(self) -> None:
        self.events: list[Event] = []
        self.done = threading.Event()

    def __call__(self, events: list[Event]) -> None:
        self.events += events
        if any(isinstance(e, Failed) for e in events):
            self.done.set()


def test_a_dead_engine_fails_what_it_holds_and_refuses_the_rest(
        tiny_bpe_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In process, on a real engine: the step that raises fails the running request, calls it
    is handed later (GetLoad's, slot actions') and new submissions get EngineStoppedError at
    once, and on_fatal is told once."""
    monkeypatch.setenv(FAULT_AT_STEP_ENV, "2")  # the prompt's decode, then the fault
    model = native.Model(tiny_bpe_path)
    ctx = native.Context(model, ContextParams(n_ctx=512, n_seq_max=2, n_threads=1,
                                              n_threads_batch=1))
    engine = Engine(model, ctx)
    told: list[BaseException] = []
    engine.on_fatal = told.append
    engine.start()
    try:
        sink = _Sink()
        params = CompletionParams(n_predict=100, sampling=SamplingParams(temperature=0.0))
        engine.submit(Task("t0", [10, 11, 12], params, sink))
        assert sink.done.wait(EXIT_TIMEOUT_S)
        failed = sink.events[-1]
        assert isinstance(failed, Failed) and failed.code == "internal"
        assert "fault injected at step 2" in failed.message
        assert len(told) == 1 and isinstance(told[0], RuntimeError)
        with pytest.raises(EngineStoppedError, match="engine stopped"):
            engine.load().result(EXIT_TIMEOUT_S)
        with pytest.raises(EngineStoppedError):
            engine.submit(Task("t1", [10], params, _Sink()))
    finally:
        engine.stop()
        ctx.close()
        model.close()


def test_sigterm_drains_a_bridge_stream_and_refuses_new_requests(tiny_bpe_path: Path) -> None:
    srv = RestServer(tiny_bpe_path, "--drain-timeout", "60", ctx=4096, parallel=1)
    try:
        srv.wait_ready()
        timeout = httpx.Timeout(60.0, connect=5.0)
        with httpx.Client(base_url=srv.url, timeout=timeout) as client, \
                client.stream("POST", "/completion", json={
                    "prompt": "drain", "n_predict": 300, "ignore_eos": True, "stream": True,
                    "temperature": 0}) as response:
            lines = response.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            srv.proc.send_signal(signal.SIGTERM)
            # NOT_SERVING first: the bridge's /health reports it, then new requests are refused.
            wait_until(lambda: httpx.get(srv.url + "/health", timeout=timeout).status_code
                       == 503, 30.0, "the bridge's /health to say 503")
            late = httpx.post(srv.url + "/completion", json={"prompt": "late", "n_predict": 1},
                              timeout=timeout)
            assert late.status_code == 503, late.text
            events = [json.loads(first[6:])]
            events += [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
        assert events[-1]["stop"] is True and events[-1]["stop_type"] == "limit"
        assert events[-1]["tokens_predicted"] == 300
        assert srv.proc.wait(EXIT_TIMEOUT_S) == 0
    finally:
        srv.stop()
