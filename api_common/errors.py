"""The error kinds the service reports and the bridge translates: one table from each kind to
its gRPC status code and to llama-server's HTTP error shape ({"error": {"code", "message",
"type"}}); INTERNAL means a bug.

Every non-OK status also carries google.rpc details (AIP-193; api_common.rich_status encodes and
decodes them): an `ErrorInfo` whose `reason` is one of REASONS (UPPER_SNAKE, in DOMAIN), whose
metadata are the reason's METADATA_KEYS, a `BadRequest` naming the request field when one is
known, and a `RetryInfo` when retrying later can succeed (the kind's `retry_after`).

It lives here, not in the service, so that the REST bridge maps gRPC statuses to HTTP with the
service's own table (both sides agree) without depending on the service package."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

DOMAIN = "llama.v1"  # ErrorInfo.domain of every status the service sends


@dataclass(frozen=True)
class ErrorKind:
    grpc_code: grpc.StatusCode
    http_status: int
    type: str
    reason: str  # the ErrorInfo reason when the error names no more precise one
    retry_after: float | None = None  # seconds: the RetryInfo delay (None: no RetryInfo)


ERROR_KINDS: dict[str, ErrorKind] = {
    "invalid_argument": ErrorKind(grpc.StatusCode.INVALID_ARGUMENT, 400, "invalid_request_error",
                                  "INVALID_ARGUMENT"),
    "unauthenticated": ErrorKind(grpc.StatusCode.UNAUTHENTICATED, 401, "authentication_error",
                                 "UNAUTHENTICATED"),
    "permission_denied": ErrorKind(grpc.StatusCode.PERMISSION_DENIED, 403, "permission_error",
                                   "PERMISSION_DENIED"),
    "not_found": ErrorKind(grpc.StatusCode.NOT_FOUND, 404, "not_found_error", "NOT_FOUND"),
    # A client-chosen request id that is already in flight.
    "already_exists": ErrorKind(grpc.StatusCode.ALREADY_EXISTS, 409, "conflict_error",
                                "ALREADY_EXISTS"),
    "cancelled": ErrorKind(grpc.StatusCode.CANCELLED, 499, "cancelled_error", "CANCELLED"),
    "internal": ErrorKind(grpc.StatusCode.INTERNAL, 500, "server_error", "INTERNAL"),
    "unimplemented": ErrorKind(grpc.StatusCode.UNIMPLEMENTED, 501, "not_supported_error",
                               "NOT_SUPPORTED"),
    # Loading, shutting down: another replica, or this one a moment later, can serve it.
    "unavailable": ErrorKind(grpc.StatusCode.UNAVAILABLE, 503, "unavailable_error",
                             "UNAVAILABLE", retry_after=1.0),
    # A full queue (--max-queue): llama-server's own "busy" answer is a 503 as well.
    "resource_exhausted": ErrorKind(grpc.StatusCode.RESOURCE_EXHAUSTED, 503,
                                    "unavailable_error", "QUEUE_FULL", retry_after=1.0),
    "deadline_exceeded": ErrorKind(grpc.StatusCode.DEADLINE_EXCEEDED, 504, "timeout_error",
                                   "DEADLINE_EXCEEDED"),
}

# gRPC status -> (HTTP status, error type), for clients of the service such as the REST bridge.
GRPC_TO_HTTP: dict[grpc.StatusCode, tuple[int, str]] = {
    k.grpc_code: (k.http_status, k.type) for k in ERROR_KINDS.values()
}


@dataclass(frozen=True)
class Reason:
    kind: str  # a key of ERROR_KINDS: the status code it comes with
    meaning: str  # what a client reads it as (docs/api.md's table)
    http_type: str = ""  # llama-server's error type when not the kind's
    metadata_keys: tuple[str, ...] = ()  # ErrorInfo.metadata it always carries


CONTEXT_OVERFLOW = "CONTEXT_OVERFLOW"
INVALID_FIELD = "INVALID_FIELD"
UNDECODABLE_REQUEST = "UNDECODABLE_REQUEST"
LOADING_MODEL = "LOADING_MODEL"
SHUTTING_DOWN = "SHUTTING_DOWN"
QUEUE_FULL = "QUEUE_FULL"
NOT_SUPPORTED = "NOT_SUPPORTED"
UNAUTHENTICATED = "UNAUTHENTICATED"
ALREADY_EXISTS = "ALREADY_EXISTS"

# Every ErrorInfo.reason the service sends, with the status it comes with. Clients switch on
# these, so a reason, once sent, is never renamed.
REASONS: dict[str, Reason] = {
    "INVALID_ARGUMENT": Reason("invalid_argument", "the request is invalid (the message says "
                               "how); no single request field is to blame"),
    INVALID_FIELD: Reason("invalid_argument",
                          "a request field is invalid: BadRequest names it", "", ("field",)),
    CONTEXT_OVERFLOW: Reason("invalid_argument", "the prompt does not fit a slot's context",
                             "exceed_context_size_error", ("n_prompt_tokens", "n_ctx")),
    UNDECODABLE_REQUEST: Reason("invalid_argument", "the request's bytes do not decode (e.g. "
                                "nested deeper than protobuf's 100 levels)"),
    UNAUTHENTICATED: Reason("unauthenticated", "the API key is missing or wrong "
                            "(metadata api_key: missing / invalid)", "", ("api_key",)),
    "PERMISSION_DENIED": Reason("permission_denied", "not allowed"),
    "NOT_FOUND": Reason("not_found", "what the request names does not exist"),
    ALREADY_EXISTS: Reason("already_exists", "a generation with this request_id is running",
                           "", ("request_id",)),
    "CANCELLED": Reason("cancelled", "the generation was cancelled (call cancelled, Cancel "
                        "by id, or its deadline)"),
    "INTERNAL": Reason("internal", "a bug in the server"),
    NOT_SUPPORTED: Reason("unimplemented", "the RPC is not served (yet) by this server",
                          "", ("method",)),
    "UNAVAILABLE": Reason("unavailable", "the server cannot serve now; retry (RetryInfo)"),
    LOADING_MODEL: Reason("unavailable", "the model is still loading; retry (RetryInfo)"),
    SHUTTING_DOWN: Reason("unavailable", "the server is draining; retry, on another replica "
                          "(RetryInfo)"),
    QUEUE_FULL: Reason("resource_exhausted", "--max-queue requests already wait; retry later "
                       "(RetryInfo)"),
    "DEADLINE_EXCEEDED": Reason("deadline_exceeded", "the call's deadline passed"),
}


def http_face(reason: str, kind: str) -> tuple[int, str]:
    """llama-server's (HTTP status, error type) for an error of `kind` with `reason`."""
    info = ERROR_KINDS[kind]
    known = REASONS.get(reason)
    return info.http_status, (known.http_type if known and known.http_type else info.type)
