"""The gRPC side of the bridge: the one channel and its stubs (owned by the app's lifespan),
and reading server-streaming calls."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import grpc
from fastapi import Request
from grpc_health.v1 import health_pb2_grpc
from llama.v1 import service_pb2_grpc

from rest_bridge.errors import BridgeError


@dataclass(frozen=True)
class Upstream:
    """What every route needs: the stubs on the shared channel, and the bridge's settings."""

    channel: grpc.aio.Channel
    llama: Any  # service_pb2_grpc.LlamaServerStub
    health: Any  # health_pb2_grpc.HealthStub
    sse_ping_interval: float  # seconds; <= 0 disables keep-alives


def open_upstream(target: str, credentials: grpc.ChannelCredentials | None,
                  options: list[tuple[str, Any]], sse_ping_interval: float) -> Upstream:
    channel = (grpc.aio.secure_channel(target, credentials, options=options) if credentials
               else grpc.aio.insecure_channel(target, options=options))
    return Upstream(channel, service_pb2_grpc.LlamaServerStub(channel),
                    health_pb2_grpc.HealthStub(channel), sse_ping_interval)


def app_upstream(request: Request) -> Upstream:
    """The app's Upstream."""
    up: Upstream = request.app.state.upstream
    return up


async def upstream(request: Request) -> Upstream:
    """The app's Upstream as a FastAPI dependency. Async on purpose: FastAPI runs a plain `def`
    dependency in its thread pool, a thread hop per request for one attribute read."""
    return app_upstream(request)


async def next_message(call: Any) -> Any:
    """The call's next message, or None at its end; a call that fails without a final message
    raises BridgeError (e.g. a bad key, an unreachable service)."""
    try:
        msg = await call.read()
    except grpc.aio.AioRpcError as e:
        raise BridgeError.from_rpc(e) from e
    return None if msg is grpc.aio.EOF else msg


def cancel_call(call: Any) -> None:
    """Cancel the call if it is still running: the client is gone, and the service then stops
    the generation and frees its slot."""
    with contextlib.suppress(Exception):
        call.cancel()
