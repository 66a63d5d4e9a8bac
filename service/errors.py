"""One table from the engine's and the service's failure kinds to gRPC status codes and to
llama-server's HTTP error shape ({"error": {"code", "message", "type"}}); INTERNAL means a bug."""

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
    "cancelled": ErrorKind(grpc.StatusCode.CANCELLED, 499, "cancelled_error"),
    "internal": ErrorKind(grpc.StatusCode.INTERNAL, 500, "server_error"),
    "unimplemented": ErrorKind(grpc.StatusCode.UNIMPLEMENTED, 501, "not_supported_error"),
    "unavailable": ErrorKind(grpc.StatusCode.UNAVAILABLE, 503, "unavailable_error"),
    "deadline_exceeded": ErrorKind(grpc.StatusCode.DEADLINE_EXCEEDED, 504, "timeout_error"),
}

# gRPC status -> (HTTP status, error type), for clients of the service such as the REST bridge.
GRPC_TO_HTTP: dict[grpc.StatusCode, tuple[int, str]] = {
    k.grpc_code: (k.http_status, k.type) for k in ERROR_KINDS.values()
}


class ServiceError(Exception):
    """An error to report to the client with its kind (a key of ERROR_KINDS)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    @property
    def info(self) -> ErrorKind:
        return ERROR_KINDS[self.kind]
