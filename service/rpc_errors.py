"""One map from exceptions to error kinds, applied in one place to every RPC.

`error_kind` classifies an exception: what the client got wrong is INVALID_ARGUMENT (every
ValueError: our parameter, template, schema and grammar errors, and libllama's refusals of an
input, which the binding raises as ValueErrors); a full queue is RESOURCE_EXHAUSTED; anything
else is a bug, INTERNAL, and logged. The `unary` decorator wraps each unary servicer method, and
the generation RPCs' one loop (servicer._generate) applies `abort` itself, so UNKNOWN never
reaches a client.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from service.decode_guard import UndecodableRequest
from service.engine.engine import QueueFullError
from service.errors import ERROR_KINDS, ServiceError

_log = logging.getLogger(__name__)
R = TypeVar("R")

# Checked in order; the first match decides.
ERROR_MAP: tuple[tuple[type[BaseException], str], ...] = (
    (QueueFullError, "resource_exhausted"),
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
            return ServiceError(kind, message)
    _log.exception("internal error in an RPC", exc_info=exc)
    return ServiceError("internal", f"internal error: {type(exc).__name__}: {exc}")


def check_decoded(request: Any) -> None:
    """Raise the decoding failure a request stands for (service.decode_guard)."""
    if isinstance(request, UndecodableRequest):
        raise request


async def abort(context: grpc.aio.ServicerContext, exc: BaseException) -> None:
    err = as_service_error(exc)
    await context.abort(ERROR_KINDS[err.kind].grpc_code, err.message)


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
