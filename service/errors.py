"""The service's errors: ServiceError carries one of the failure kinds of the shared table
(api_common.errors: each kind's gRPC status code and llama-server's HTTP error shape
{"error": {"code", "message", "type"}}; INTERNAL means a bug) and what the status's google.rpc
details say (reason, metadata, the request field at fault, a retry delay). The table lives in
api_common so that the REST bridge uses it without the service package; it is re-exported
here."""

from __future__ import annotations

from collections.abc import Mapping

from api_common.errors import (
    CONTEXT_OVERFLOW,
    ERROR_KINDS,
    GRPC_TO_HTTP,
    INVALID_FIELD,
    REASONS,
    ErrorKind,
    http_face,
)

__all__ = ["ERROR_KINDS", "GRPC_TO_HTTP", "ErrorKind", "ServiceError", "context_overflow"]


class ServiceError(Exception):
    """An error to report to the client with its kind (a key of ERROR_KINDS).

    `reason` (a key of REASONS) defaults to INVALID_FIELD when `field` names the request
    field at fault, else to the kind's; `retry_after` (seconds) to the kind's."""

    def __init__(self, kind: str, message: str, *, field: str | None = None,
                 reason: str | None = None, metadata: Mapping[str, object] | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.field = field
        self.reason = reason or (INVALID_FIELD if field else ERROR_KINDS[kind].reason)
        assert REASONS[self.reason].kind == kind, (self.reason, kind)
        self.metadata = {k: str(v) for k, v in (metadata or {}).items()}
        if field:
            self.metadata.setdefault("field", field)
        self.retry_after = retry_after if retry_after is not None else \
            ERROR_KINDS[kind].retry_after

    @property
    def info(self) -> ErrorKind:
        return ERROR_KINDS[self.kind]

    @property
    def http(self) -> tuple[int, str]:
        """llama-server's (HTTP status, error type) for this error."""
        return http_face(self.reason, self.kind)


def context_overflow(n_prompt_tokens: int, n_ctx: int) -> ServiceError:
    """A prompt longer than a slot's context, in llama-server's words and fields
    (its exceed_context_size_error)."""
    return ServiceError(
        "invalid_argument",
        f"request ({n_prompt_tokens} tokens) exceeds the available context size ({n_ctx} "
        "tokens), try increasing it",
        reason=CONTEXT_OVERFLOW, metadata={"n_prompt_tokens": n_prompt_tokens, "n_ctx": n_ctx})
