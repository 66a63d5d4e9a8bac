"""API-key authentication for gRPC: `authorization: Bearer <key>` metadata, as llama-server's
`--api-key` does for HTTP. Keys are compared in constant time (api_common.auth.key_matches,
which the REST bridge uses too; re-exported here); health checks and GET-style props stay
public, as the spec makes /health and GET /props."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

from api_common.auth import key_matches

__all__ = ["PUBLIC_METHODS", "ApiKeyInterceptor", "bearer_token", "key_matches"]

PUBLIC_METHODS = frozenset({
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/llama.v1.LlamaServer/GetProps",
})


def bearer_token(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    for k, v in metadata or ():
        if k.lower() == "authorization":
            value = v.decode() if isinstance(v, bytes) else str(v)
            scheme, _, token = value.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


def _deny(message: str) -> grpc.RpcMethodHandler:
    async def unary(_req: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    return grpc.unary_unary_rpc_method_handler(unary)


def _deny_stream(message: str) -> grpc.RpcMethodHandler:
    async def stream(_req: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - makes this an async generator

    return grpc.unary_stream_rpc_method_handler(stream)


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    def __init__(self, keys: Sequence[str]) -> None:
        self._keys = tuple(keys)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = details.method
        if not self._keys or method in PUBLIC_METHODS or method.startswith(
                "/grpc.reflection."):
            return await continuation(details)
        token = bearer_token(details.invocation_metadata)
        if token is not None and key_matches(token, self._keys):
            return await continuation(details)
        handler = await continuation(details)
        message = "Invalid API Key" if token is not None else "Missing API key"
        if handler is not None and handler.response_streaming:
            return _deny_stream(message)
        return _deny(message)
