"""Starting the REST bridge as a child process of `llama-grpc-server`.

Why a process and not a thread or the same event loop: the engine thread holds the GIL whenever
it is not inside a llama.cpp call (sampling bookkeeping, detokenizing, building messages). HTTP
parsing, JSON encoding and SSE framing in the same interpreter would compete with it for the
GIL and stretch every decode step. In its own process the bridge costs the engine nothing; it
talks to the service over loopback gRPC like any other client.

The API keys go to the child on stdin, never in its argv (visible to every user through `ps`)
or environment (inherited by whatever it spawns). The child keeps reading stdin and exits when
the pipe closes, so it dies with the server even if the server is killed outright.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from dataclasses import dataclass, field
from typing import Protocol

_log = logging.getLogger("llama-grpc-server.rest")
_WILDCARDS = {"", "0.0.0.0", "::", "[::]"}


class NetSettings(Protocol):
    """The network settings the bridge needs (service.config.ServerNetConfig has them)."""

    @property
    def hosts(self) -> tuple[str, ...]: ...
    @property
    def port(self) -> int: ...
    @property
    def api_keys(self) -> tuple[str, ...]: ...
    @property
    def api_prefix(self) -> str: ...
    @property
    def ssl_key_file(self) -> str | None: ...
    @property
    def ssl_cert_file(self) -> str | None: ...
    @property
    def sse_ping_interval(self) -> int: ...
    @property
    def cors_origins(self) -> str: ...
    @property
    def cors_methods(self) -> str: ...
    @property
    def cors_headers(self) -> str: ...
    @property
    def cors_credentials(self) -> bool: ...
    @property
    def webui(self) -> bool: ...
    @property
    def static_path(self) -> str | None: ...


def grpc_target_for(host: str, grpc_port: int, tls: bool) -> str:
    """Where the bridge reaches a service listening on host:grpc_port."""
    if host in _WILDCARDS or host.endswith(".sock") or (tls and host in ("127.0.0.1", "::1")):
        # A TLS certificate names a host, rarely a loopback address.
        host = "localhost" if tls else ("[::1]" if ":" in host else "127.0.0.1")
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{grpc_port}"


def _tcp_host(hosts: tuple[str, ...]) -> str:
    """The first --host that gRPC listens on (UNIX socket paths are the bridge's only)."""
    return next((h for h in hosts if not h.endswith(".sock")), "127.0.0.1")


def bridge_argv(net: NetSettings, grpc_port: int, verbose: bool = False,
                max_body_bytes: int | None = None) -> list[str]:
    tls = bool(net.ssl_key_file and net.ssl_cert_file)
    argv = [sys.executable, "-m", "rest_bridge.cli", "--keys-from-parent",
            "--grpc-target", grpc_target_for(_tcp_host(net.hosts), grpc_port, tls),
            "--host", ",".join(net.hosts), "--port", str(net.port), "--api-prefix", net.api_prefix,
            "--sse-ping-interval", str(net.sse_ping_interval),
            "--cors-origins", net.cors_origins, "--cors-methods", net.cors_methods,
            "--cors-headers", net.cors_headers]
    if not net.cors_credentials:
        argv.append("--no-cors-credentials")
    if not net.webui:
        argv.append("--no-webui")
    elif net.static_path:
        argv += ["--path", net.static_path]
    if tls:
        assert net.ssl_key_file and net.ssl_cert_file
        argv += ["--ssl-key-file", net.ssl_key_file, "--ssl-cert-file", net.ssl_cert_file,
                 "--grpc-ca-file", net.ssl_cert_file]
    if verbose:
        argv.append("--verbose")
    if max_body_bytes is not None:
        argv += ["--max-body-bytes", str(max_body_bytes)]
    return argv


@dataclass
class BridgeProcess:
    process: asyncio.subprocess.Process
    _watcher: asyncio.Task[None] | None = field(default=None, repr=False)
    _stopping: bool = False

    async def stop(self, grace_s: float = 5.0) -> None:
        """Close the bridge's stdin (it shuts down), then make sure it is gone."""
        self._stopping = True
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            async with asyncio.timeout(grace_s):
                await self.process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            await self.process.wait()
        if self._watcher is not None:
            self._watcher.cancel()

    async def _watch(self) -> None:
        code = await self.process.wait()
        if not self._stopping:
            # Not fatal: gRPC keeps serving (e.g. when --port is taken by another server).
            _log.error("the REST bridge exited with code %d; gRPC keeps serving", code)


async def start_bridge(net: NetSettings, grpc_port: int, verbose: bool = False,
                       max_body_bytes: int | None = None) -> BridgeProcess:
    """Start the REST bridge for a service on grpc_port; it serves every net.hosts at
    net.port (a UNIX socket path: HTTP on that socket)."""
    # A session of its own: a terminal's Ctrl-C reaches only the server, which drains and then
    # closes the pipe, so REST streams in flight can finish during the drain.
    proc = await asyncio.create_subprocess_exec(*bridge_argv(net, grpc_port, verbose,
                                                             max_body_bytes),
                                                stdin=asyncio.subprocess.PIPE,
                                                start_new_session=True)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps({"api_keys": list(net.api_keys)}).encode() + b"\n")
    await proc.stdin.drain()
    bridge = BridgeProcess(proc)
    bridge._watcher = asyncio.get_running_loop().create_task(bridge._watch())
    return bridge
