"""The parts of llama.v1.LlamaServerHttp's servicer (service/rpc_http.py) that every route
module shares: the request body, the HTTP status and headers as response metadata, errors as
the bridge's JSON, the API key, and the context a typed RPC runs with in-process."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import grpc
from google.api.httpbody_pb2 import HttpBody
from llama.v1 import http_pb2_grpc

from api_common.auth import key_matches
from rest_bridge.errors import BridgeError
from rest_bridge.jsonio import dumps
from service.rpc_base import Context

JSON = "application/json; charset=utf-8"
SSE = "text/event-stream; charset=utf-8"  # as Starlette writes the bridge's
STATUS_KEY = "x-http-status"
REQUEST_ID_KEY = "x-request-id"
# A streamed body's length (envoy/filter.lua makes it content-length).
LENGTH_KEY = "x-content-length"
# The bridge's 401 for a missing or wrong key (rest_bridge.auth.UNAUTHORIZED).
UNAUTHORIZED = (401, "Invalid API Key", "authentication_error")


class _Aborted(grpc.aio.AioRpcError):  # type: ignore[misc]
    """A typed RPC's abort inside an HTTP-body call: the status it would have sent."""


class InnerContext:
    """The context a typed RPC runs with inside an HTTP-body call: the caller's metadata and
    cancellation, but its initial metadata is kept (for the HTTP headers) and its abort raises
    the status, which BridgeError.from_rpc reads exactly as the bridge reads it off the wire."""

    def __init__(self, outer: Context) -> None:
        self._outer = outer
        self.initial: dict[str, str] = {}

    async def send_initial_metadata(self, metadata: Sequence[tuple[str, Any]]) -> None:
        self.initial.update((k, str(v)) for k, v in metadata)

    async def abort(self, code: grpc.StatusCode, details: str = "",
                    trailing_metadata: Sequence[tuple[str, Any]] = ()) -> None:
        raise _Aborted(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing_metadata),
                       details)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._outer, name)


def presented_key(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    """The API key, read as the bridge reads it from the headers (rest_bridge.auth): the
    `authorization` value with or without `Bearer `, else `x-api-key`."""
    found = {k.lower(): v for k, v in metadata or () if isinstance(v, str)}
    value = found.get("authorization") or found.get("x-api-key")
    if not value:
        return None
    if value[:7].lower() == "bearer ":
        value = value[7:]
    return value.strip() or None


def body_bytes(request: Any) -> bytes:
    if not isinstance(request, HttpBody):  # service.decode_guard's stand-in for bad bytes
        raise BridgeError.invalid_request("the request could not be decoded")
    return bytes(request.data)


async def send_head(context: Context, status: int, headers: dict[str, str]) -> None:
    await context.send_initial_metadata(((STATUS_KEY, str(status)), *headers.items()))


def error_body(err: BridgeError) -> HttpBody:
    return HttpBody(content_type=JSON, data=dumps(err.body()))


# Set on a 503 (loading, draining, queue full) answered before anything else: Envoy retries the
# request on another replica (retry_on retriable-headers, envoy/llama-envoy.yaml.in) as it does
# for the typed RPCs' UNAVAILABLE, and its Lua filter drops the header.
RETRY_ELSEWHERE_KEY = "x-retry-elsewhere"


async def send_error(context: Context, err: BridgeError) -> HttpBody:
    headers = {k.lower(): v for k, v in err.headers.items()}
    if err.status == 503:
        headers[RETRY_ELSEWHERE_KEY] = "1"
    await send_head(context, err.status, headers)
    return error_body(err)


def bridge_error(e: Exception) -> BridgeError:
    if isinstance(e, BridgeError):
        return e
    if isinstance(e, grpc.aio.AioRpcError):
        return BridgeError.from_rpc(e)
    raise e


class HttpServicerBase(http_pb2_grpc.LlamaServerHttpServicer):  # type: ignore[misc]
    """What every HTTP-body RPC needs: `typed`, the llama.v1.LlamaServer servicer it runs the
    typed RPCs on, and the API key check."""

    def __init__(self, typed: Any, api_keys: Sequence[str] = (),
                 sse_ping_interval: float = 30.0) -> None:
        self._typed = typed
        self._keys = tuple(api_keys)
        self._ping = float(sse_ping_interval)

    def _admit(self, context: Context) -> None:
        if not self._keys:
            return
        key = presented_key(context.invocation_metadata())
        if key is None or not key_matches(key, self._keys):
            raise BridgeError(*UNAUTHORIZED)


async def close_quietly(gen: Any) -> None:
    """End an async generator (the typed RPC's: its cleanup cancels the generation and frees
    the slot); a no-op for None or one that has ended."""
    if gen is not None:
        with contextlib.suppress(Exception):
            await gen.aclose()
