"""Requests that protobuf cannot decode get INVALID_ARGUMENT, not UNKNOWN.

grpcio decodes a request before any handler runs, and reports a decoder failure as UNKNOWN
("Unexpected DecodeError"): a JSON schema nested 17 `properties` deep exceeds protobuf's limit
of 100 nested messages (a google.protobuf.Struct takes two a JSON level). This interceptor
wraps each llama.v1 method's deserializer so that such a request arrives as an
`UndecodableRequest`, which the error map (rpc_errors) answers with INVALID_ARGUMENT. The
other services' methods (grpc.health.v1) refuse such a request with INVALID_ARGUMENT themselves
(bytes that are not protobuf were UNKNOWN there; found by tests/test_fuzz_grpc.py).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

_PREFIX = "/llama.v1."


class UndecodableRequest(ValueError):
    """Stands for a request whose bytes did not decode (it is also the error to report)."""


def _guarded(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        try:
            return deserialize(data)
        except DecodeError as e:
            return UndecodableRequest(
                f"the request could not be decoded: {e} (protobuf decodes at most 100 nested "
                "messages; a google.protobuf.Struct such as json_schema takes two a JSON "
                "level)")

    return decode


def _refusing(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of another service (health, reflection), which knows nothing of
    UndecodableRequest: such a request is refused with INVALID_ARGUMENT before it runs."""
    async def check(request: Any, context: grpc.aio.ServicerContext) -> None:
        if isinstance(request, UndecodableRequest):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(request))

    guarded = handler._replace(request_deserializer=_guarded(handler.request_deserializer))
    if handler.unary_unary is not None:
        unary = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await check(request, context)
            return await unary(request, context)

        return guarded._replace(unary_unary=unary_unary)
    if handler.unary_stream is not None and not inspect.isasyncgenfunction(
            handler.unary_stream):
        streaming = handler.unary_stream  # writes with context.write (health's Watch)

        async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await check(request, context)
            return await streaming(request, context)

        return guarded._replace(unary_stream=unary_stream)
    return handler


class DecodeGuard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or handler.request_deserializer is None:
            return handler
        if not details.method.startswith(_PREFIX):
            return _refusing(handler)
        return handler._replace(request_deserializer=_guarded(handler.request_deserializer))
