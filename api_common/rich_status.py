"""google.rpc.Status details (AIP-193) on a gRPC status, both ways: `encode` builds the status
the service sends (ErrorInfo always, BadRequest and RetryInfo when they apply), `decode` reads
them back from a failed call (the REST bridge, tests, any Python client).

The details travel as the `grpc-status-details-bin` trailer, the encoding every gRPC library's
"rich status" helper reads (grpcio-status here, `status.FromError` in Go, `StatusProto` in
Java); grpcio-status is the reference implementation of that encoding for Python.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from api_common.errors import DOMAIN, ERROR_KINDS


def encode(kind: str, message: str, reason: str, metadata: Mapping[str, str] | None = None,
           field_name: str | None = None, retry_after: float | None = None) -> Any:
    """The grpc.Status (code, details, trailing_metadata) for an error of `kind`."""
    info = ERROR_KINDS[kind]
    status = status_pb2.Status(code=info.grpc_code.value[0], message=message)
    status.details.add().Pack(error_details_pb2.ErrorInfo(
        reason=reason, domain=DOMAIN, metadata=dict(metadata or {})))
    if field_name:
        status.details.add().Pack(error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=field_name, description=message,
                                                        reason=reason)]))
    if retry_after is not None:
        seconds = math.floor(retry_after)
        delay = duration_pb2.Duration(seconds=seconds,
                                      nanos=round((retry_after - seconds) * 1e9))
        status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return rpc_status.to_status(status)


@dataclass
class Details:
    """What a status's details say (empty when it has none)."""

    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    field_violations: list[tuple[str, str]] = field(default_factory=list)  # (field, why)
    retry_after: float | None = None  # seconds


def decode(call: Any) -> Details:
    """The details of a failed call (a grpc.RpcError / grpc.aio.AioRpcError: anything with
    code(), details() and trailing_metadata()). A status without details, or with details
    that do not match it, reads as no details."""
    try:
        status = rpc_status.from_call(call)
    except (ValueError, TypeError, AttributeError):
        return Details()
    out = Details()
    for any_msg in status.details if status is not None else ():
        if any_msg.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            any_msg.Unpack(info)
            out.reason, out.domain, out.metadata = info.reason, info.domain, dict(info.metadata)
        elif any_msg.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            any_msg.Unpack(bad)
            out.field_violations = [(v.field, v.description) for v in bad.field_violations]
        elif any_msg.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            any_msg.Unpack(retry)
            out.retry_after = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
    return out

