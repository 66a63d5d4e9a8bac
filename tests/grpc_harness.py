"""Runs the real gRPC service in a subprocess for tests, and talks to it over loopback.

`ServiceProcess.start(model, *flags)` launches `python -m service.cli -m <model> ... --grpc-port
<free port>`, waits until grpc.health.v1 reports SERVING and keeps the server's log in a temp
file (shown when start-up fails). `complete()` runs one Completion call and gathers its messages
into a `CompletionResult`; requests are written as llama-server JSON (`completion_request`).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from llama.v1 import chat_pb2, completion_pb2, service_pb2_grpc

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 60.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[Any], timeout: float) -> int:
    """SIGTERM, then SIGKILL if it has not exited within `timeout`; the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    return int(proc.returncode)


def service_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a server subprocess: our packages importable, no LLAMA_ARG_* leaks."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMA_ARG_")}
    paths = [str(REPO), str(REPO / "gen" / "python"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env.update(extra or {})
    return env


class ServiceProcess:
    """One server subprocess; `stop()` (or the context manager) ends it."""

    def __init__(self, args: Sequence[str], port: int, env: dict[str, str]) -> None:
        self.port = port
        self.address = f"127.0.0.1:{port}"
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the process
            prefix="llama-grpc-test-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", *args, "--grpc-port", str(port)],
            cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT)
        self._channels: list[grpc.Channel] = []

    @classmethod
    def start(cls, model: Path | str, *flags: str, ctx: int = 2048, parallel: int = 4,
              env: dict[str, str] | None = None, wait: bool = True) -> ServiceProcess:
        """Start `-m model -c ctx -np parallel <flags>` and (by default) wait until SERVING.

        The REST bridge the server starts as its child gets a free --port of its own, so that
        servers running side by side do not collide on llama-server's default 8080."""
        args = ["-m", str(model), "-c", str(ctx), "-np", str(parallel),
                "--port", str(free_port()), *flags]
        return cls.launch(args, free_port(), service_env(env), wait)

    @classmethod
    def launch(cls, args: Sequence[str], port: int, env: dict[str, str],
               wait: bool = True) -> ServiceProcess:
        """Start `args` with gRPC on `port` and (by default) wait until SERVING."""
        svc = cls(args, port, env)
        if wait:
            try:
                svc.wait_serving()
            except BaseException:
                svc.stop()
                raise
        return svc

    # -- clients --------------------------------------------------------------------------
    def channel(self) -> grpc.Channel:
        ch = grpc.insecure_channel(self.address)
        self._channels.append(ch)
        return ch

    def stub(self) -> Any:
        return service_pb2_grpc.LlamaServerStub(self.channel())

    def health(self) -> Any:
        return health_pb2_grpc.HealthStub(self.channel())

    # -- life cycle -------------------------------------------------------------------------
    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")

    def output(self) -> str:
        """The log, under the name rest_harness.wait_http reads."""
        return self.log()

    def wait_serving(self, timeout: float = START_TIMEOUT_S) -> None:
        health = self.health()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=1.0).status
                if status == SERVING:
                    return
            except grpc.RpcError:
                pass  # port not open yet
            time.sleep(0.05)
        raise TimeoutError(f"server not SERVING after {timeout}s:\n{self.log()[-4000:]}")

    def stop(self, timeout: float = 15.0) -> int:
        for ch in self._channels:
            ch.close()
        self._channels.clear()
        code = stop_process(self.proc, timeout)
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)
        return code

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def running_service(model: Path | str, *flags: str, **kwargs: Any) -> Iterator[ServiceProcess]:
    svc = ServiceProcess.start(model, *flags, **kwargs)
    try:
        yield svc
    finally:
        svc.stop()


# -- requests and results ---------------------------------------------------------------------
def completion_request(**fields: Any) -> Any:
    """A CompletionRequest from llama-server's JSON body (prompt, stop, logit_bias as JSON)."""
    fields.setdefault("stream", True)
    return json_format.ParseDict(fields, completion_pb2.CompletionRequest())


def chat_request(**fields: Any) -> Any:
    fields.setdefault("stream", True)
    return json_format.ParseDict(fields, chat_pb2.ChatCompletionRequest())


GREEDY: dict[str, Any] = {"temperature": 0.0, "cache_prompt": True}
"""Fields of a deterministic request (temperature 0 samples the most likely token)."""


@dataclass
class CompletionResult:
    messages: list[Any] = field(default_factory=list)
    code: grpc.StatusCode = grpc.StatusCode.OK
    details: str = ""

    @property
    def chunks(self) -> list[Any]:
        """Messages before the final one."""
        return [m for m in self.messages if not m.stop]

    @property
    def final(self) -> Any:
        finals = [m for m in self.messages if m.stop]
        assert len(finals) == 1, f"expected one final message, got {len(finals)}"
        return finals[0]

    @property
    def content(self) -> str:
        return "".join(m.content for m in self.messages)

    @property
    def tokens(self) -> list[int]:
        return [t for m in self.messages for t in m.tokens]


def complete(stub: Any, timeout: float = 60.0, metadata: Any = None,
             **fields: Any) -> CompletionResult:
    """Run one Completion call to its end; a non-OK status is recorded, not raised."""
    result = CompletionResult()
    call = stub.Completion(completion_request(**fields), timeout=timeout, metadata=metadata)
    try:
        for msg in call:
            result.messages.append(msg)
    except grpc.RpcError as e:
        result.code, result.details = e.code(), e.details() or ""
    return result


# Greedy, penalties off (so the greedy token is the argmax of the reported logits), no cache
# reuse (every run evaluates its prompt itself), with the top-2 log-probabilities reported:
# the requests that `assert_same_generation` compares.
EXACT: dict[str, Any] = {"temperature": 0.0, "repeat_penalty": 1.0, "cache_prompt": False,
                         "n_probs": 2, "ignore_eos": True}
LOGPROB_TOL = 5e-3


def _top_logprobs(r: CompletionResult) -> list[dict[int, float]]:
    return [{c.id: c.logprob for c in p.top_logprobs}
            for m in r.messages for p in m.completion_probabilities]


def assert_same_generation(alone: CompletionResult, other: CompletionResult) -> None:
    """`other` (an EXACT request run in another batch shape) generated what `alone` did.

    Tolerance: a request decoded in a batch with others does not see bit-identical logits:
    CPU kernels sum in a different order per batch shape (~1e-7), and tiny-bpe's output matrix
    is Q8_0, so the last hidden state is rounded to 8 bits per value before the output product;
    a 1e-7 wobble sometimes flips one rounding and moves log-probabilities by ~1e-3 (observed
    <= 1.3e-3, also with an F32 KV cache). Hence LOGPROB_TOL on the reported log-probabilities.
    Greedy outputs are compared token by token; should they part, that is accepted only at a
    near-tie (both candidates within LOGPROB_TOL; Q8_0 output rows make exact ties common),
    with every earlier log-probability equal within LOGPROB_TOL. A mix-up between requests
    differs by whole units at once.
    """
    assert alone.code == other.code == grpc.StatusCode.OK, other.details
    la, lb = _top_logprobs(alone), _top_logprobs(other)
    assert len(la) == len(alone.tokens), "run the requests with EXACT (n_probs)"
    for i, (ta, tb) in enumerate(zip(alone.tokens, other.tokens, strict=True)):
        shared = la[i].keys() & lb[i].keys()
        assert ta in shared, f"token {i}: {ta} not among the other run's top tokens"
        for tok in shared:
            assert abs(la[i][tok] - lb[i][tok]) <= LOGPROB_TOL, f"token {i}: logits differ"
        if ta != tb:  # only a near-tie may flip; the sequences part here
            assert tb in shared and abs(lb[i][ta] - lb[i][tb]) <= LOGPROB_TOL, \
                f"token {i}: {ta} vs {tb} is no near-tie: a mix-up"
            return
    assert alone.content == other.content


def greedy(stub: Any, prompt: Any, n_predict: int, **fields: Any) -> CompletionResult:
    return complete(stub, prompt=prompt, n_predict=n_predict, **{**GREEDY, **fields})
