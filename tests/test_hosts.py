"""Every address given to --host is served (issue 19, item 7): gRPC on each TCP address at
--grpc-port, the REST bridge on each at --port, and a path ending in .sock as a UNIX socket for
HTTP, as llama-server; the bridge removes its socket files when it stops."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_harness import ServiceProcess, free_port, service_env
from llama.v1 import server_pb2, service_pb2_grpc

from rest_bridge.launcher import bridge_argv
from service.server import grpc_hosts


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def _health(client: httpx.Client, url: str, deadline: float) -> dict[str, str]:
    while True:
        try:
            return dict(client.get(url, timeout=2.0).json())
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_every_host_is_served(tiny_bpe_path: Path, tmp_path: Path) -> None:
    hosts = ["127.0.0.1", "127.0.0.2"] + (["::1"] if _has_ipv6_loopback() else [])
    sock = tmp_path / "api.sock"
    grpc_port, http_port = free_port(), free_port()
    svc = ServiceProcess.launch(["-m", str(tiny_bpe_path), "-c", "512", "-np", "1",
                                 "--port", str(http_port), "--host", ",".join([*hosts, str(sock)])],
                                grpc_port, service_env())
    try:
        deadline = time.monotonic() + 120
        for host in hosts:
            addr = f"[{host}]" if ":" in host else host
            with grpc.insecure_channel(f"{addr}:{grpc_port}") as ch:
                load = service_pb2_grpc.LlamaServerStub(ch).GetLoad(
                    server_pb2.GetLoadRequest(), timeout=10)
                assert load.total_slots == 1
            with httpx.Client() as http:
                assert _health(http, f"http://{addr}:{http_port}/health", deadline) == \
                    {"status": "ok"}
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock))) as http:
            assert _health(http, "http://bridge/health", deadline) == {"status": "ok"}
    finally:
        svc.stop()
    assert not sock.exists()


@pytest.mark.parametrize("hosts, expected", [
    (("0.0.0.0",), ("0.0.0.0",)),
    (("127.0.0.1", "/run/api.sock", "::1"), ("127.0.0.1", "::1")),
    (("/run/api.sock",), ("127.0.0.1",)),
])
def test_grpc_listens_on_every_tcp_host(hosts: tuple[str, ...],
                                        expected: tuple[str, ...]) -> None:
    assert grpc_hosts(hosts) == expected


class _Net:
    hosts = ("/run/api.sock", "::1", "127.0.0.1")
    port, api_keys, api_prefix, ssl_key_file, ssl_cert_file = 8080, (), "", None, None
    sse_ping_interval, cors_origins, cors_methods, cors_headers = 30, "*", "*", "*"
    cors_credentials, webui, static_path = True, True, None


def test_the_bridge_gets_every_host_and_reaches_grpc_on_a_tcp_one() -> None:
    argv = bridge_argv(_Net(), 50051)
    assert argv[argv.index("--host") + 1] == "/run/api.sock,::1,127.0.0.1"
    assert argv[argv.index("--grpc-target") + 1] == "[::1]:50051"
