"""API keys over HTTP, as llama-server's --api-key: `Authorization: Bearer <key>` (the bare key
and `X-Api-Key` are accepted too). Every route needs a key except GET /health (and
/v1/health) and GET /props, which the spec makes public; CORS preflights pass.

The bridge checks the key itself (so a wrong key costs no gRPC call) and forwards it to the
service as `authorization` metadata, which the service checks again when it has keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from api_common.auth import key_matches
from rest_bridge.errors import BridgeError, error_response

_BEARER = "bearer "


def public_routes(api_prefix: str) -> frozenset[tuple[str, str]]:
    return frozenset((method, api_prefix + path) for method, path in (
        ("GET", "/health"), ("GET", "/v1/health"), ("GET", "/props"),
        ("HEAD", "/health"), ("HEAD", "/v1/health")))


def presented_key(headers: Headers) -> str | None:
    """The API key a request carries, or None."""
    value = headers.get("authorization") or headers.get("x-api-key")
    if not value:
        return None
    if value[:len(_BEARER)].lower() == _BEARER:
        value = value[len(_BEARER):]
    return value.strip() or None


def grpc_metadata(headers: Headers) -> tuple[tuple[str, str], ...]:
    """Metadata for the gRPC call: the caller's key, as the service expects it."""
    key = presented_key(headers)
    return (("authorization", f"Bearer {key}"),) if key else ()


UNAUTHORIZED = BridgeError(401, "Invalid API Key", "authentication_error")


class ApiKeys:
    """Which requests may pass: all of them without keys; else CORS preflights, the public
    routes, and requests carrying one of the keys."""

    def __init__(self, keys: Sequence[str], public: Iterable[tuple[str, str]]) -> None:
        self._keys = tuple(keys)
        self._public = frozenset(public)

    def admit(self, scope: Scope) -> bool:
        if (not self._keys or scope["method"] == "OPTIONS"
                or (scope["method"], scope["path"]) in self._public):
            return True
        key = presented_key(Headers(scope=scope))
        return key is not None and key_matches(key, self._keys)


class ApiKeyMiddleware:
    """Answers 401 `authentication_error` before routing when a request lacks a valid key."""

    def __init__(self, app: ASGIApp, keys: ApiKeys) -> None:
        self._app = app
        self._keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._keys.admit(scope):
            await self._app(scope, receive, send)
        else:
            await error_response(UNAUTHORIZED)(scope, receive, send)
