"""The service's errors: ServiceError carries one of the failure kinds of the shared table
(api_common.errors: each kind's gRPC status code and llama-server's HTTP error shape
{"error": {"code", "message", "type"}}; INTERNAL means a bug). The table lives in api_common so
that the REST bridge uses it without the service package; it is re-exported here."""

from __future__ import annotations

from api_common.errors import ERROR_KINDS, GRPC_TO_HTTP, ErrorKind

__all__ = ["ERROR_KINDS", "GRPC_TO_HTTP", "ErrorKind", "ServiceError"]


class ServiceError(Exception):
    """An error to report to the client with its kind (a key of ERROR_KINDS)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    @property
    def info(self) -> ErrorKind:
        return ERROR_KINDS[self.kind]
