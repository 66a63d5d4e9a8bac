"""The process layout: GET /health follows gRPC health (503 "Loading model", then 200), the
bridge runs alone with --grpc-target, and under `llama-grpc-server` it is a child process that
gets its API keys off the command line and dies with the server."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from rest_harness import API_KEY, BridgeAlone, RestServer, free_port, wait_http

pytestmark = pytest.mark.slow

LOADING = {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}


@pytest.fixture()
def health_only_service() -> Iterator[tuple[str, health.HealthServicer]]:
    """A real gRPC server with only the standard health service, NOT_SERVING at first: what
    the llama.v1 service looks like while its model loads."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", servicer
    server.stop(0)


def test_health_follows_grpc_health(
        health_only_service: tuple[str, health.HealthServicer]) -> None:
    target, servicer = health_only_service
    bridge = BridgeAlone(target)
    try:
        wait_http(bridge, bridge.url + "/health", {503}, 60)
        r = httpx.get(bridge.url + "/health")
        assert r.status_code == 503 and r.json() == LOADING
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        r = httpx.get(bridge.url + "/health")
        assert r.status_code == 200 and r.json() == {"status": "ok"}
        # Other routes say what the service says: it has no llama.v1 service at all here.
        r = httpx.post(bridge.url + "/tokenize", json={"content": "x"})
        assert r.status_code == 501 and r.json()["error"]["type"] == "not_supported_error"
    finally:
        # uvicorn shuts down gracefully on SIGTERM, then re-raises it.
        assert bridge.stop() in (0, -signal.SIGTERM)


def test_unreachable_service_is_503() -> None:
    bridge = BridgeAlone(f"127.0.0.1:{free_port()}")
    try:
        wait_http(bridge, bridge.url + "/health", {503}, 60)
        r = httpx.post(bridge.url + "/completion", json={"prompt": "x"}, timeout=30)
        assert r.status_code == 503
        assert r.json()["error"]["type"] == "unavailable_error"
    finally:
        bridge.stop()


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(k) for k in (task / "children").read_text().split()]
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs Linux /proc")
def test_bridge_is_a_child_that_dies_with_the_server(tiny_bpe_path: Path) -> None:
    server = RestServer(tiny_bpe_path, "--api-key", API_KEY, ctx=1024, parallel=1)
    try:
        server.wait_ready()
        children = _children(server.proc.pid)
        assert len(children) == 1
        bridge = children[0]
        argv = Path(f"/proc/{bridge}/cmdline").read_bytes().split(b"\0")
        assert b"rest_bridge.cli" in argv
        assert not any(API_KEY.encode() in a for a in argv), "API key on the bridge's argv"
        environ = Path(f"/proc/{bridge}/environ").read_bytes()
        assert API_KEY.encode() not in environ, "API key in the bridge's environment"
        r = httpx.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {API_KEY}"})
        assert r.status_code == 200
        # Killed outright, the server cannot stop its child: the child notices by itself.
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait()
        deadline = time.monotonic() + 15
        while _alive(bridge) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(bridge), "the REST bridge outlived the server"
    finally:
        server.stop()


def test_sigterm_stops_both(tiny_bpe_path: Path) -> None:
    server = RestServer(tiny_bpe_path, ctx=1024, parallel=1)
    try:
        server.wait_ready()
        bridge = _children(server.proc.pid)[0]
    finally:
        code = server.stop()
    assert code == 0, server.output()
    assert not _alive(bridge)
