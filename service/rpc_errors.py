"""One map from exceptions to error kinds, applied in one place to every RPC, and the statuses
built from them (with their google.rpc details, AIP-193).

`as_service_error` classifies an exception: what the client got wrong is INVALID_ARGUMENT (every
ValueError: our parameter, template, schema and grammar errors, and libllama's refusals of an
input, which the binding raises as ValueErrors); a full queue is RESOURCE_EXHAUSTED; anything
else is a bug, INTERNAL, and logged. The `unary` decorator wraps each unary servicer method, and
the generation RPCs' one loop (servicer._generate) applies `abort` itself, so UNKNOWN never
reaches a client.

Every status carries an ErrorInfo (reason, domain "llama.v1", metadata), a BadRequest when the
request field at fault is known (a ValueError with a `field` attribute, such as ParamError, or
a ServiceError's `field`), and a RetryInfo on UNAVAILABLE and RESOURCE_EXHAUSTED
(api_common.rich_status). `inband_error` is the same error as a stream's last message carries
it; `NotServedGuard` gives RPCs without code the same treatment.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from llama.v1 import common_pb2

from api_common import rich_status
from api_common.errors import NOT_SUPPORTED, UNDECODABLE_REQUEST
from service.decode_guard import UndecodableRequest
from service.engine.engine import EngineStoppedError, QueueFullError
from service.errors import ServiceError

_log = logging.getLogger(__name__)
R = TypeVar("R")

# Checked in order; the first match decides.
ERROR_MAP: tuple[tuple[type[BaseException], str], ...] = (
    (QueueFullError, "resource_exhausted"),
    (EngineStoppedError, "unavailable"),
    (ValueError, "invalid_argument"),
    (RecursionError, "invalid_argument"),  # an input nested too deeply for our own parsers
)


def as_service_error(exc: BaseException) -> ServiceError:
    if isinstance(exc, ServiceError):
        return exc
    for kind_of, kind in ERROR_MAP:
        if isinstance(exc, kind_of):
            message = str(exc) or type(exc).__name__
            if isinstance(exc, RecursionError):
                message = "the request is nested too deeply to process"
            field = getattr(exc, "field", None)
            reason = UNDECODABLE_REQUEST if isinstance(exc, UndecodableRequest) else None
            return ServiceError(kind, message, reason=reason,
                                field=field if isinstance(field, str) and field else None)
    _log.exception("internal error in an RPC", exc_info=exc)
    return ServiceError("internal", f"internal error: {type(exc).__name__}: {exc}")


# A message echoing the input (a 20 KB regex, say) travels in grpc-message and twice in the
# details trailer: past the clients' 16 KiB metadata limit the whole status was lost and the
# call read as UNAVAILABLE ("metadata size exceeds hard limit"). Found by issue 22's tests.
MAX_MESSAGE_CHARS = 1024


def bounded_message(message: str) -> str:
    """`message`, cut to MAX_MESSAGE_CHARS characters, saying how much was cut."""
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    cut = len(message) - MAX_MESSAGE_CHARS
    return f"{message[:MAX_MESSAGE_CHARS]}... ({cut} more characters)"


def status_of(err: ServiceError) -> Any:
    """The grpc.Status (code, details, trailing metadata with the google.rpc details)."""
    return rich_status.encode(err.kind, bounded_message(err.message), err.reason, err.metadata,
                              err.field, err.retry_after)


def inband_error(err: ServiceError) -> Any:
    """The llama.v1 ErrorInfo a stream's last message carries: llama-server's error object for
    `err` (its HTTP code and type), plus the reason of the status that follows."""
    code, type_ = err.http
    msg = common_pb2.ErrorInfo(code=code, message=bounded_message(err.message), type=type_,
                               reason=err.reason)
    for name in ("n_prompt_tokens", "n_ctx"):
        if name in err.metadata:
            setattr(msg, name, int(err.metadata[name]))
    return msg


def check_decoded(request: Any) -> None:
    """Raise the decoding failure a request stands for (service.decode_guard)."""
    if isinstance(request, UndecodableRequest):
        raise request


async def abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    status = status_of(as_service_error(exc))
    await context.abort(status.code, status.details, status.trailing_metadata)


Unary = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[R]]


def unary(method: Unary[R]) -> Unary[R]:
    @functools.wraps(method)
    async def rpc(self: Any, request: Any, context: grpc.aio.ServicerContext) -> R:
        try:
            check_decoded(request)
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as e:  # mapped to a status: never UNKNOWN
            await abort(context, e)
            raise AssertionError("unreachable: abort raises") from e

    return rpc


def not_served(method: str) -> ServiceError:
    name = method.rpartition("/")[2] or method
    return ServiceError("unimplemented", f"{name} is not served by this server yet",
                        reason=NOT_SUPPORTED, metadata={"method": method})


def _refusal(err: ServiceError, streaming: bool, handler: Any) -> grpc.RpcMethodHandler:
    async def refuse(_request: Any, context: grpc.aio.ServicerContext) -> None:
        await abort(context, err)

    # A coroutine serves a response-streaming method too (it would write with context.write).
    make = grpc.unary_stream_rpc_method_handler if streaming else \
        grpc.unary_unary_rpc_method_handler
    if handler is None:  # no such method: the request's bytes are never decoded
        return make(refuse)
    return make(refuse, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)


class NotServedGuard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """UNIMPLEMENTED with details (NOT_SUPPORTED, metadata `method`) instead of grpcio's bare
    status, for the proto's RPCs the servicer leaves to the generated base class (`base`) and
    for methods this server does not have at all. Registered last, so it sees the servicer's
    own handlers."""

    def __init__(self, base: type) -> None:
        self._base = base
        # Per method: its refusal, or None when served (decided once: it is on every call).
        self._refusals: dict[str, grpc.RpcMethodHandler | None] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None:
            return _refusal(not_served(details.method), False, None)
        method = details.method
        if method not in self._refusals:
            self._refusals[method] = self._refusal_of(method, handler)
        return self._refusals[method] or handler

    def _refusal_of(self, method: str, handler: grpc.RpcMethodHandler) -> Any:
        if handler.request_streaming:
            return None
        behavior = handler.unary_stream or handler.unary_unary
        generated = getattr(self._base, method.rpartition("/")[2], None)
        if generated is not None and getattr(behavior, "__func__", None) is generated:
            return _refusal(not_served(method), handler.response_streaming, handler)
        return None
