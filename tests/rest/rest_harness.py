"""Runs `llama-grpc-server` (gRPC plus the REST bridge child) or the bridge alone in
subprocesses for the REST tests, on free ports, with their logs in temp files (shown when
start-up fails)."""

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
from pathlib import Path
from typing import Any, Protocol

import httpx

# Not resolve(): the tests may run from a copy of the repo whose tests/ links here.
REPO = Path(__file__).absolute().parent.parent.parent
START_TIMEOUT_S = 90.0
API_KEY = "test-key-5f2c"  # the keyed server's --api-key


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("LLAMA_ARG_") and k != "LLAMA_API_KEY"}
    paths = [str(REPO), str(REPO / "gen" / "python"), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env.update(extra or {})
    return env


class Process:
    """A subprocess with its output in a temp file; `stop()` ends it."""

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the process
            prefix="llama-rest-test-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([sys.executable, *argv], cwd=REPO,
                                     env=subprocess_env(env), stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class RestServer(Process):
    """`python -m service.cli -m <model> ... --port <free> --grpc-port <free>`."""

    def __init__(self, model: Path, *flags: str, ctx: int = 16384, parallel: int = 4) -> None:
        self.port, self.grpc_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        super().__init__(["-m", "service.cli", "-m", str(model), "-c", str(ctx),
                          "-np", str(parallel), "--port", str(self.port),
                          "--grpc-port", str(self.grpc_port), *flags])

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Until GET /health answers 200 (the bridge is up and the model loaded)."""
        wait_http(self, self.url + "/health", {200}, timeout)


def started(server: RestServer) -> RestServer:
    """`server` once ready; stopped, and the failure raised, if it never gets there."""
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


@contextmanager
def serving(server: RestServer) -> Iterator[RestServer]:
    """`server` once ready (as `started`), stopped when the block ends: a fixture's body."""
    started(server)
    try:
        yield server
    finally:
        server.stop()


class BridgeAlone(Process):
    """`python -m rest_bridge.cli --grpc-target <target> --port <free>`."""

    def __init__(self, grpc_target: str, *flags: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(["-m", "rest_bridge.cli", "--grpc-target", grpc_target,
                          "--port", str(self.port), *flags])


class Watched(Protocol):
    """A server subprocess as wait_http watches it: this harness's Process, or
    grpc_harness.ServiceProcess."""

    proc: subprocess.Popen[Any]

    def output(self) -> str: ...


def wait_http(process: Watched, url: str, statuses: set[int], timeout: float) -> int:
    """Poll url until it answers one of `statuses`; fail with the process log otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            raise RuntimeError(f"process exited with {process.proc.returncode}:\n"
                               f"{process.output()}")
        try:
            status = httpx.get(url, timeout=2.0).status_code
            if status in statuses:
                return status
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer {statuses} in {timeout}s:\n{process.output()}")


def sse_events(body: str) -> list[str]:
    """The `data:` payloads of an SSE body, checking llama-server's exact framing: every event
    is one `data: ...` line followed by a blank line (keep-alive comments `:` are skipped)."""
    assert body.endswith("\n\n"), f"SSE body must end with a blank line: {body[-80:]!r}"
    events = []
    for block in body[:-2].split("\n\n"):
        if block == ":":
            continue
        assert block.startswith("data: ") and "\n" not in block, f"bad SSE event {block!r}"
        events.append(block[len("data: "):])
    return events
