"""Requests that protobuf cannot decode get INVALID_ARGUMENT, not UNKNOWN.

grpcio decodes a request before any handler runs, and reports a decoder failure as UNKNOWN
("Unexpected DecodeError"): a JSON schema nested 17 `properties` deep exceeds protobuf's limit
of 100 nested messages (a google.protobuf.Struct takes two a JSON level). This interceptor
wraps each llama.v1 method's deserializer so that such a request arrives as an
`UndecodableRequest`, which the error map (rpc_errors) answers with INVALID_ARGUMENT.
"""

from __future__ import annotations

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


class DecodeGuard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if (handler is None or not details.method.startswith(_PREFIX)
                or handler.request_deserializer is None):
            return handler
        return handler._replace(request_deserializer=_guarded(handler.request_deserializer))
