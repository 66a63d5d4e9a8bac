"""The gRPC side of the bridge: the one channel and its stubs (owned by the app's lifespan),
and a reader for server-streaming calls.

The reader pulls messages on its own task into a queue. That lets the HTTP side wait for the
next message and still send an SSE keep-alive after a silent interval, and lets a client that
goes away cancel the call at once (which makes the service free the slot).
"""

from __future__ import annotations

import asyncio
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


def upstream(request: Request) -> Upstream:
    """The app's Upstream (a FastAPI dependency)."""
    up: Upstream = request.app.state.upstream
    return up


class Ping:
    """Put in a reader's queue when the stream was silent for the keep-alive interval."""


PING = Ping()
_END = object()


class CallReader:
    """Reads one server-streaming call. `next()` gives a message, PING, or None at the end, and
    raises BridgeError when the call fails without a final message. Always `close()` it."""

    def __init__(self, call: Any) -> None:
        self._call = call
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._pump_task = self._loop.create_task(self._pump())
        self._interval = 0.0
        self._last = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None

    def start_pings(self, interval: float) -> None:
        """From now on, hand out PING after `interval` seconds without a message (<= 0: never)."""
        if interval > 0 and self._timer is None:
            self._interval = interval
            self._timer = self._loop.call_later(interval, self._tick)

    async def _pump(self) -> None:
        try:
            async for msg in self._call:
                self._queue.put_nowait(msg)
        except grpc.aio.AioRpcError as e:
            self._queue.put_nowait(BridgeError.from_rpc(e))
        self._queue.put_nowait(_END)

    def _tick(self) -> None:
        # Runs on the loop every interval; a ping goes out only if nothing else did meanwhile.
        now = self._loop.time()
        if now - self._last >= self._interval and self._queue.empty():
            self._queue.put_nowait(PING)
            self._last = now
        delay = self._interval - (now - self._last)
        self._timer = self._loop.call_later(delay if delay > 0 else self._interval, self._tick)

    async def next(self) -> Any:
        item = await self._queue.get()
        self._last = self._loop.time()
        if item is _END:
            self._queue.put_nowait(_END)  # stay at the end for further calls
            return None
        if isinstance(item, BridgeError):
            raise item
        return item

    def close(self) -> None:
        """Stop reading and cancel the call if it is still running (the client went away)."""
        if self._timer is not None:
            self._timer.cancel()
        if not self._pump_task.done():
            self._pump_task.cancel()
        with contextlib.suppress(Exception):
            self._call.cancel()
