"""The grpc.aio server: our servicer, standard health (NOT_SERVING while the model loads) and
reflection, API-key auth, optional TLS. The model loads on a worker thread after the port is
open, so health checks see it loading. `ServerHandle.drain` is the graceful shutdown (SIGTERM)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from llama.v1 import http_pb2, http_pb2_grpc, service_pb2, service_pb2_grpc

from service import limits
from service.auth import ApiKeyInterceptor
from service.config import ServerConfig
from service.decode_guard import DecodeGuard
from service.drain import DrainGate
from service.rpc_errors import NotServedGuard
from service.rpc_http import LlamaHttpServicer
from service.runtime import Runtime, load_runtime
from service.servicer import LlamaServicer

_log = logging.getLogger(__name__)
SERVICE_NAME = "llama.v1.LlamaServer"
HTTP_SERVICE_NAME = http_pb2.DESCRIPTOR.services_by_name["LlamaServerHttp"].full_name
HOLD_LOAD_ENV = "LLAMA_GRPC_TEST_HOLD_LOAD_WHILE"
# Long generations stream many messages; allow large prompts and embeddings.
_OPTIONS = [("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20)]


@dataclass
class ServerHandle:
    server: grpc.aio.Server
    port: int
    # The asyncio health servicer: the thread-based one parks a worker thread in every
    # Health/Watch call, and the process then never exits after SIGTERM.
    health: HealthServicer
    runtime: Runtime | None = None
    load_error: BaseException | None = None
    loaded: asyncio.Event = field(default_factory=asyncio.Event)
    gate: DrainGate = field(default_factory=DrainGate)

    async def set_serving(self, serving: bool) -> None:
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def stop(self, grace: float | None = 5.0) -> None:
        await self.set_serving(False)
        await self.server.stop(grace)
        if self.runtime is not None:
            await asyncio.to_thread(self.runtime.close)

    async def drain(self, seconds: float) -> bool:
        """Graceful shutdown: report NOT_SERVING, refuse new calls with UNAVAILABLE (a proxy
        retries them elsewhere), let running calls finish for at most `seconds`, then stop.
        True when every call finished in time."""
        await self.set_serving(False)
        finished = await self.gate.drain(seconds)
        await self.stop(grace=1.0 if finished else 0)
        return finished


def _credentials(config: ServerConfig) -> grpc.ServerCredentials | None:
    net = config.net
    if not net.ssl_key_file and not net.ssl_cert_file:
        return None
    if not (net.ssl_key_file and net.ssl_cert_file):
        raise SystemExit("--ssl-key-file and --ssl-cert-file must be given together")
    key = Path(net.ssl_key_file).read_bytes()
    cert = Path(net.ssl_cert_file).read_bytes()
    return grpc.ssl_server_credentials([(key, cert)])


async def start_server(config: ServerConfig, host: str | None = None,
                       port: int | None = None, build_info: str = "") -> ServerHandle:
    """Open the gRPC port (0: any free port), then load the model in the background."""
    limits.configure(config.limits)
    gate = DrainGate()
    interceptors: list[grpc.aio.ServerInterceptor] = [gate]
    if config.net.api_keys:
        interceptors.append(ApiKeyInterceptor(config.net.api_keys))
    interceptors.append(DecodeGuard())
    interceptors.append(NotServedGuard(service_pb2_grpc.LlamaServerServicer))  # the last
    server = grpc.aio.server(interceptors=interceptors, options=_OPTIONS)
    health_servicer = HealthServicer()
    handle_ref: list[ServerHandle] = []
    servicer = LlamaServicer(lambda: handle_ref[0].runtime if handle_ref else None, build_info)
    service_pb2_grpc.add_LlamaServerServicer_to_server(servicer, server)
    http_pb2_grpc.add_LlamaServerHttpServicer_to_server(
        LlamaHttpServicer(servicer, config.net.api_keys, config.net.sse_ping_interval), server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, HTTP_SERVICE_NAME,
         health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server)
    creds = _credentials(config)
    bound = config.net.grpc_port if port is None else port
    hosts = (host,) if host else grpc_hosts(config.net.hosts)
    for h in hosts:  # every --host: the first one picks the port when it is 0
        addr = f"{_bracketed(h)}:{bound}"
        bound = server.add_secure_port(addr, creds) if creds else server.add_insecure_port(addr)
    handle = ServerHandle(server, bound, health_servicer, gate=gate)
    handle_ref.append(handle)
    await handle.set_serving(False)
    await server.start()
    _log.info("gRPC listening on %s (%s)", ", ".join(f"{_bracketed(h)}:{bound}" for h in hosts),
              "TLS" if creds else "plaintext")
    asyncio.get_running_loop().create_task(_load(handle, config))
    return handle


def grpc_hosts(hosts: tuple[str, ...]) -> tuple[str, ...]:
    """The addresses gRPC listens on: every --host but UNIX socket paths (those are the REST
    bridge's, HTTP as in llama-server); loopback when only socket paths are given, so that the
    bridge reaches the service."""
    tcp = tuple(h for h in hosts if not h.endswith(".sock"))
    return tcp or ("127.0.0.1",)


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _load_runtime_held(config: ServerConfig) -> Runtime:
    # Test hook (tests/test_envoy_replicas.py): the load waits, so the replica stays
    # NOT_SERVING, for as long as the file named by this variable exists. Unset in deployments.
    hold = os.environ.get(HOLD_LOAD_ENV)
    while hold and Path(hold).exists():
        time.sleep(0.05)
    return load_runtime(config)


async def _load(handle: ServerHandle, config: ServerConfig) -> None:
    try:
        handle.runtime = await asyncio.to_thread(_load_runtime_held, config)
        await handle.set_serving(True)
    except BaseException as e:  # reported by the caller (the CLI exits non-zero)
        handle.load_error = e
        _log.error("could not load the model: %s", e)
    finally:
        handle.loaded.set()


__all__ = ["SERVICE_NAME", "ServerHandle", "service_pb2", "start_server"]
