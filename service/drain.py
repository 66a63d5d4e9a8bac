"""Graceful shutdown for the gRPC server: a gate that counts running calls and, once closed,
refuses new ones with UNAVAILABLE.

A proxy in front of several replicas (Envoy with `retry_on: unavailable`) retries a refused call
on another replica, since nothing of it has been answered yet; calls already running go on until
they finish or the drain timeout ends them. Health checks and reflection always pass (a draining
server must still answer NOT_SERVING) and are not counted (a health Watch never ends).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from api_common.errors import SHUTTING_DOWN as SHUTTING_DOWN_REASON
from service.errors import ServiceError
from service.rpc_errors import abort

_log = logging.getLogger(__name__)
UNGATED_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
SHUTTING_DOWN = "server is shutting down"


class DrainGate(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Server interceptor: `running` calls are tracked; after `close()` new ones are refused."""

    def __init__(self) -> None:
        self._closed = False
        self.running = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def closed(self) -> bool:
        return self._closed

    async def drain(self, seconds: float) -> bool:
        """Close the gate and wait (at most `seconds`) until no call runs; True if none does."""
        self._closed = True
        if self.running:
            _log.info("draining: %d call(s) running, waiting up to %gs", self.running, seconds)
        try:
            await asyncio.wait_for(self._idle.wait(), seconds)
        except TimeoutError:
            _log.warning("drain timeout: cancelling %d call(s) still running", self.running)
            return False
        return True

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or handler.request_streaming or details.method.startswith(
                UNGATED_PREFIXES):
            return handler  # llama.v1 has no client-streaming RPC; those pass untracked
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                self._gated_stream(handler.unary_stream),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return grpc.unary_unary_rpc_method_handler(
            self._gated_unary(handler.unary_unary),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer)

    # The gate is checked when the call starts running, on the event loop, so a call is either
    # counted before `drain` looks at the count or refused: none slips in between.
    async def _enter(self, context: grpc.aio.ServicerContext) -> None:
        if self._closed:
            await abort(context, ServiceError("unavailable", SHUTTING_DOWN,
                                              reason=SHUTTING_DOWN_REASON))
        self.running += 1
        self._idle.clear()

    def _leave(self) -> None:
        self.running -= 1
        if self.running == 0:
            self._idle.set()

    def _gated_unary(self, behavior: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await self._enter(context)
            try:
                return await behavior(request, context)
            finally:
                self._leave()

        return unary

    def _gated_stream(self, behavior: Callable[..., Any]) -> Callable[..., AsyncIterator[Any]]:
        async def stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await self._enter(context)
            try:
                result = behavior(request, context)
                if inspect.isawaitable(result):  # a handler that writes with context.write()
                    await result
                    return
                async for message in result:
                    yield message
            finally:
                self._leave()

        return stream
