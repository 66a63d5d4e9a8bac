"""The generation routes' direct way in: the app hands a POST for a plain generation route
(deps.PlainPosts) straight to its handler, past FastAPI's middleware stack and router. That
stack is a dozen ASGI layers plus route matching, all of it before the gRPC call starts and
again around every body message sent; skipping it is most of what the bridge can still take
off a first token (docs/rest.md, "Overhead against direct gRPC").

Only where skipping changes nothing a client sees: a POST for one of those exact paths, no
`Origin` header (CORS then only adds `Vary: Origin`, which this adds too), no root path. The
API key is checked as ApiKeyMiddleware checks it, and errors leave in the same shape as the
app's exception handlers give them. Everything else goes through the full stack."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from rest_bridge.auth import UNAUTHORIZED, ApiKeys
from rest_bridge.deps import Endpoint
from rest_bridge.errors import as_bridge_error, error_response


class DirectRoutes:
    def __init__(self, endpoints: Mapping[str, Endpoint], keys: ApiKeys,
                 vary_origin: bool) -> None:
        self._endpoints = dict(endpoints)
        self._keys = keys
        self._vary_origin = vary_origin  # CORS is on: it would add Vary: Origin

    def endpoint_for(self, scope: Scope) -> Endpoint | None:
        """The handler that may serve this request directly, if any."""
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
            return None
        endpoint = self._endpoints.get(scope["path"])
        if endpoint is None or any(name == b"origin" for name, _ in scope["headers"]):
            return None
        return endpoint

    async def serve(self, endpoint: Endpoint, scope: Scope, receive: Receive,
                    send: Send) -> None:
        if self._vary_origin:
            send = _with_vary_origin(send)
        if not self._keys.admit(scope):
            response = error_response(UNAUTHORIZED)
        else:
            try:
                response = await endpoint(Request(scope, receive))
            except Exception as e:  # as the app's exception handlers would answer it
                response = error_response(as_bridge_error(e))
        await response(scope, receive, send)


def _with_vary_origin(send: Send) -> Send:
    async def sender(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", ()), (b"vary", b"Origin")]
        await send(message)
    return sender
