"""Start and stop the servers under test with the same settings, and read their peak memory.

Both get the same llama-server flags (`ServerSettings.flags`): our CLI takes llama-server's.
Our service gets `--grpc-port` for gRPC and `--host/--port` for its REST bridge; whether the
bridge answers there is found out at start-up, and the REST path is skipped (with the reason)
when it does not.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from native import paths

START_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class ServerSettings:
    model: Path
    ctx: int
    parallel: int
    threads: int
    batch: int = 2048
    ubatch: int = 512
    gpu_layers: int = 0
    extra: tuple[str, ...] = ()  # more llama-server flags, given to both servers

    def flags(self) -> list[str]:
        return ["-m", str(self.model), "-c", str(self.ctx), "-np", str(self.parallel),
                "-t", str(self.threads), "-tb", str(self.threads), "-b", str(self.batch),
                "-ub", str(self.ubatch), "-ngl", str(self.gpu_layers), *self.extra]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
        except OSError:
            continue
        for child in text.split():
            found += [int(child), *_children(int(child))]
    return found


def _vm_hwm_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class ServerProcess:
    """One server process (with whatever it starts itself); its log goes to `log_path`."""

    def __init__(self, name: str, cmd: list[str], log_path: Path,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, env=env, cwd=paths.REPO_ROOT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, n: int = 30) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    def peak_rss_mib(self) -> float:
        """Sum of the peak resident sets (VmHWM) of the process and all its descendants."""
        pids = [self.proc.pid, *_children(self.proc.pid)]
        return sum(_vm_hwm_kib(p) for p in pids) / 1024

    def stop(self, timeout: float = 20.0) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        self._log.close()

    def _check_alive(self) -> None:
        if not self.alive():
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; its log ends:\n"
                               f"{self.log_tail()}")


def _wait_http(server: ServerProcess, url: str, deadline: float) -> bool:
    while time.monotonic() < deadline:
        server._check_alive()
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def _wait_grpc(server: ServerProcess, address: str, deadline: float) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            server._check_alive()
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=2.0).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise TimeoutError(f"{server.name} not SERVING after {START_TIMEOUT_S}s:\n"
                       f"{server.log_tail()}")


def start_llama_server(binary: Path, settings: ServerSettings, log_dir: Path,
                       extra: tuple[str, ...] = (), name: str = "llama-server") -> tuple[
        ServerProcess, str]:
    """llama-server on a free port, once /health says the model is loaded; returns its URL.
    `extra`: flags for this one only (`-bs`, the backend-sampling anchor)."""
    port = free_port()
    server = ServerProcess(name, [str(binary), *settings.flags(), *extra, "--host",
                                  "127.0.0.1", "--port", str(port)],
                           log_dir / f"{name}-np{settings.parallel}.log")
    url = f"http://127.0.0.1:{port}"
    if not _wait_http(server, f"{url}/health", time.monotonic() + START_TIMEOUT_S):
        server.stop()
        raise TimeoutError(f"llama-server not ready:\n{server.log_tail()}")
    return server, url


def service_env() -> dict[str, str]:
    """Our packages and the generated llama.v1 code importable; no LLAMA_ARG_* from outside."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMA_ARG_")}
    extra = [str(paths.REPO_ROOT), str(paths.REPO_ROOT / "gen" / "python")]
    env["PYTHONPATH"] = os.pathsep.join([*extra, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@dataclass
class OurService:
    server: ServerProcess
    grpc_address: str
    rest_url: str  # "" when the bridge is not there
    rest_skip_reason: str


def start_our_service(settings: ServerSettings, log_dir: Path, bridge: bool) -> OurService:
    """llama-grpc-server with gRPC and its REST bridge on loopback (the bridge always runs, as
    in production: on a free port, measured only if wanted)."""
    grpc_port, rest_port = free_port(), free_port()
    skip = "" if bridge else "REST path not requested"
    cmd = [sys.executable, "-m", "service.cli", *settings.flags(), "--grpc-port",
           str(grpc_port), "--host", "127.0.0.1", "--port", str(rest_port)]
    server = ServerProcess("llama-grpc-server", cmd,
                           log_dir / f"llama-grpc-server-np{settings.parallel}.log", service_env())
    address = f"127.0.0.1:{grpc_port}"
    try:
        _wait_grpc(server, address, time.monotonic() + START_TIMEOUT_S)
    except BaseException:
        server.stop()
        raise
    rest_url = ""
    if not skip:
        url = f"http://127.0.0.1:{rest_port}"
        if _wait_http(server, f"{url}/health", time.monotonic() + 30.0):
            rest_url = url
        else:
            skip = f"the REST bridge did not answer GET {url}/health within 30 s"
    return OurService(server, address, rest_url, skip)
