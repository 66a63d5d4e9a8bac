"""API-key authentication for gRPC: `authorization: Bearer <key>` metadata, as llama-server's
`--api-key` does for HTTP. Keys are compared in constant time (api_common.auth.key_matches,
which the REST bridge uses too; re-exported here); health checks and GET-style props stay
public, as the spec makes /health and GET /props. A refusal is UNAUTHENTICATED with an ErrorInfo
(reason UNAUTHENTICATED, metadata api_key: missing / invalid), through rpc_errors.abort."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

from api_common.auth import key_matches
from api_common.errors import UNAUTHENTICATED
from service.errors import ServiceError
from service.rpc_errors import abort

__all__ = ["PUBLIC_METHODS", "ApiKeyInterceptor", "bearer_token", "key_matches"]

PUBLIC_METHODS = frozenset({
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/llama.v1.LlamaServer/GetProps",
})


# llama.v1.LlamaServerHttp checks the key itself, as the REST bridge does (Bearer or
# X-Api-Key), and refuses with llama-server's 401 body (service/rpc_http.py).
HTTP_SERVICE_PREFIX = "/llama.v1.LlamaServerHttp/"


def bearer_token(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    for k, v in metadata or ():
        if k.lower() == "authorization":
            value = v.decode() if isinstance(v, bytes) else str(v)
            scheme, _, token = value.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


def denial(token: str | None) -> ServiceError:
    """UNAUTHENTICATED, llama-server's words; metadata api_key: "missing" or "invalid"."""
    if token is None:
        return ServiceError("unauthenticated", "Missing API key", reason=UNAUTHENTICATED,
                            metadata={"api_key": "missing"})
    return ServiceError("unauthenticated", "Invalid API Key", reason=UNAUTHENTICATED,
                        metadata={"api_key": "invalid"})


def _deny(err: ServiceError) -> grpc.RpcMethodHandler:
    async def unary(_req: Any, context: grpc.aio.ServicerContext) -> None:
        await abort(context, err)

    return grpc.unary_unary_rpc_method_handler(unary)


def _deny_stream(err: ServiceError) -> grpc.RpcMethodHandler:
    async def stream(_req: Any, context: grpc.aio.ServicerContext) -> Any:
        await abort(context, err)
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
                ("/grpc.reflection.", HTTP_SERVICE_PREFIX)):
            return await continuation(details)
        token = bearer_token(details.invocation_metadata)
        if token is not None and key_matches(token, self._keys):
            return await continuation(details)
        handler = await continuation(details)
        if handler is not None and handler.response_streaming:
            return _deny_stream(denial(token))
        return _deny(denial(token))
