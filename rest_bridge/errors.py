"""Errors in llama-server's shape `{"error": {"code", "message", "type"}}`, in one place.

gRPC status codes map to HTTP status and error type through the table the service reports its
errors with (api_common.errors.GRPC_TO_HTTP), so both sides agree; codes outside it are server
errors. The status's google.rpc details refine that (api_common.rich_status): the ErrorInfo
reason CONTEXT_OVERFLOW is llama-server's 400 exceed_context_size_error with n_prompt_tokens
and n_ctx, and a RetryInfo becomes a Retry-After header (whole seconds) on a 429 or 503.
FastAPI's own failures (unknown route, wrong method, validation) get the same shape.
"""

from __future__ import annotations

import json
import logging
import math
from typing import TYPE_CHECKING, Any

import grpc

from api_common import rich_status
from api_common.errors import (
    CONTEXT_OVERFLOW,
    DOMAIN,
    ERROR_KINDS,
    GRPC_TO_HTTP,
    NOT_SUPPORTED,
    REASONS,
    http_face,
)

# The web framework only where a response or the app is at hand: BridgeError and its JSON are
# shared with the service (service/rpc_http.py, through jsonio), which must not load FastAPI.
if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from starlette.responses import Response

_log = logging.getLogger(__name__)

# Types of the HTTP statuses the bridge produces itself (not from a gRPC status).
_TYPE_OF_STATUS = {400: "invalid_request_error", 401: "authentication_error",
                   403: "permission_error", 404: "not_found_error",
                   405: "invalid_request_error", 413: "invalid_request_error",
                   500: "server_error", 501: "not_supported_error", 503: "unavailable_error"}


# grpcio's own texts for a method the service has no code for (rather than one it disabled).
_GRPC_STOCK_UNIMPLEMENTED = ("Method not implemented", "Method not found")


class BridgeError(Exception):
    """A failure to answer with llama-server's error object and this HTTP status (`extra`:
    more members of the error object; `headers`: of the response, e.g. Retry-After)."""

    def __init__(self, status: int, message: str, type_: str | None = None,
                 extra: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_ or _TYPE_OF_STATUS.get(status, "server_error")
        self.extra = extra or {}
        self.headers = headers or {}

    @classmethod
    def invalid_request(cls, message: str) -> BridgeError:
        return cls(400, message, "invalid_request_error")

    @classmethod
    def from_rpc(cls, e: grpc.aio.AioRpcError) -> BridgeError:
        """From a failed call's status and its google.rpc details (the service's reason picks
        llama-server's error type; RetryInfo becomes Retry-After)."""
        status, type_ = GRPC_TO_HTTP.get(e.code(), (500, "server_error"))
        message = e.details() or e.code().name
        details = rich_status.decode(e)
        reason = REASONS.get(details.reason) if details.domain == DOMAIN else None
        if reason is None or ERROR_KINDS[reason.kind].grpc_code != e.code():
            details = rich_status.Details()  # not ours, or not this status's: the code decides
        else:
            status, type_ = http_face(details.reason, reason.kind)
        extra: dict[str, Any] = {}
        if details.reason == CONTEXT_OVERFLOW:
            extra = {k: _int(details.metadata.get(k)) for k in ("n_prompt_tokens", "n_ctx")}
        if e.code() == grpc.StatusCode.UNIMPLEMENTED and (
                any(stock in message for stock in _GRPC_STOCK_UNIMPLEMENTED)
                or (details.reason == NOT_SUPPORTED and "method" in details.metadata)):
            message = "This server does not support this endpoint yet."
        headers = {}
        if details.retry_after is not None and status in (429, 503):
            headers["Retry-After"] = str(max(1, math.ceil(details.retry_after)))
        return cls(status, message, type_, extra, headers)

    @classmethod
    def from_info(cls, info: Any) -> BridgeError:
        """From a llama.v1 ErrorInfo (the `error` of a stream's last message)."""
        extra = {k: getattr(info, k) for k in ("n_prompt_tokens", "n_ctx") if info.HasField(k)}
        return cls(info.code or 500, info.message, info.type or None, extra)

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.status, "message": self.message, "type": self.type,
                          **self.extra}}


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def error_response(err: BridgeError, headers: dict[str, str] | None = None) -> Response:
    from starlette.responses import Response  # see the imports

    body = json.dumps(err.body(), ensure_ascii=False, separators=(",", ":")).encode()
    return Response(body, status_code=err.status, headers={**err.headers, **(headers or {})},
                    media_type="application/json; charset=utf-8")


def as_bridge_error(exc: Exception) -> BridgeError:
    """What a route's exception tells the client; anything unexpected is logged here."""
    if isinstance(exc, BridgeError):
        return exc
    if isinstance(exc, grpc.aio.AioRpcError):
        return BridgeError.from_rpc(exc)
    _log.exception("unhandled error in the REST bridge", exc_info=exc)
    return BridgeError(500, f"internal error in the REST bridge: {exc}")


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
        parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg")))
    return "; ".join(parts) or "invalid request"


def install_error_handlers(app: FastAPI) -> None:
    """Every error the app can produce leaves in llama-server's shape."""
    from fastapi.exceptions import RequestValidationError  # see the imports
    from starlette.exceptions import HTTPException as StarletteHTTPException

    async def on_route_error(_req: Request, exc: Exception) -> Response:
        return error_response(as_bridge_error(exc))

    async def on_http_error(_req: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        message = "File Not Found" if exc.status_code == 404 else str(exc.detail)
        headers = dict(exc.headers) if exc.headers else None  # e.g. Allow on 405
        return error_response(BridgeError(exc.status_code, message), headers)

    async def on_validation_error(_req: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(BridgeError.invalid_request(_validation_message(exc)))

    # BridgeError and AioRpcError separately: Starlette's handler for Exception itself runs in
    # ServerErrorMiddleware, which re-raises after answering (a traceback in the log).
    app.add_exception_handler(BridgeError, on_route_error)
    app.add_exception_handler(grpc.aio.AioRpcError, on_route_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_route_error)
