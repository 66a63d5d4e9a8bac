"""The error kinds the service reports and the bridge translates: one table from each kind to
its gRPC status code and to llama-server's HTTP error shape ({"error": {"code", "message",
"type"}}); INTERNAL means a bug.

It lives here, not in the service, so that the REST bridge maps gRPC statuses to HTTP with the
service's own table (both sides agree) without depending on the service package."""

from __future__ import annotations

from dataclasses import dataclass

import grpc


@dataclass(frozen=True)
class ErrorKind:
    grpc_code: grpc.StatusCode
    http_status: int
    type: str


ERROR_KINDS: dict[str, ErrorKind] = {
    "invalid_argument": ErrorKind(grpc.StatusCode.INVALID_ARGUMENT, 400, "invalid_request_error"),
    "unauthenticated": ErrorKind(grpc.StatusCode.UNAUTHENTICATED, 401, "authentication_error"),
    "permission_denied": ErrorKind(grpc.StatusCode.PERMISSION_DENIED, 403, "permission_error"),
    "not_found": ErrorKind(grpc.StatusCode.NOT_FOUND, 404, "not_found_error"),
    # A client-chosen request id that is already in flight.
    "already_exists": ErrorKind(grpc.StatusCode.ALREADY_EXISTS, 409, "conflict_error"),
    "cancelled": ErrorKind(grpc.StatusCode.CANCELLED, 499, "cancelled_error"),
    "internal": ErrorKind(grpc.StatusCode.INTERNAL, 500, "server_error"),
    "unimplemented": ErrorKind(grpc.StatusCode.UNIMPLEMENTED, 501, "not_supported_error"),
    "unavailable": ErrorKind(grpc.StatusCode.UNAVAILABLE, 503, "unavailable_error"),
    # A full queue (--max-queue): llama-server's own "busy" answer is a 503 as well.
    "resource_exhausted": ErrorKind(grpc.StatusCode.RESOURCE_EXHAUSTED, 503,
                                    "unavailable_error"),
    "deadline_exceeded": ErrorKind(grpc.StatusCode.DEADLINE_EXCEEDED, 504, "timeout_error"),
}

# gRPC status -> (HTTP status, error type), for clients of the service such as the REST bridge.
GRPC_TO_HTTP: dict[grpc.StatusCode, tuple[int, str]] = {
    k.grpc_code: (k.http_status, k.type) for k in ERROR_KINDS.values()
}
