"""The application factory. The lifespan owns the one gRPC channel every request goes through;
settings live on the app (no module globals), so several bridges can share a process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.types import Receive, Scope, Send

from rest_bridge import (
    routes_completion,
    routes_embedding,
    routes_openai,
    routes_server,
    routes_slot_files,
    routes_tokenize,
    routes_webui,
)
from rest_bridge.auth import ApiKeyMiddleware, ApiKeys, public_routes
from rest_bridge.deps import DEFAULT_MAX_BODY_BYTES
from rest_bridge.direct import DirectRoutes
from rest_bridge.errors import install_error_handlers
from rest_bridge.upstream import open_upstream

# As the service: long generations and large prompts or embeddings.
CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_receive_message_length", 64 << 20),
    ("grpc.max_send_message_length", 64 << 20),
]
_LOCAL_ORIGIN = r"https?://(localhost|127\.0\.0\.1|\[::1\])(:\d+)?"


@dataclass(frozen=True)
class CorsSettings:
    """llama-server's --cors-* flags (comma-separated lists)."""

    origins: str = "*"  # "localhost" allows local origins only
    methods: str = "GET, POST, DELETE, OPTIONS"
    headers: str = "*"
    credentials: bool = True


@dataclass(frozen=True)
class BridgeSettings:
    grpc_target: str  # HOST:PORT of the llama.v1 service
    api_keys: tuple[str, ...] = ()  # empty: no key needed (the service may still want one)
    api_prefix: str = ""  # every route is served under this prefix, e.g. "/llama"
    sse_ping_interval: float = 30.0  # seconds of silence before an SSE keep-alive; <= 0: none
    cors: CorsSettings | None = field(default_factory=CorsSettings)  # None: no CORS headers
    grpc_credentials: grpc.ChannelCredentials | None = None  # None: plaintext channel
    webui: bool = True  # the page at `/` (routes_webui); False: `/` is 404, as --no-webui
    static_path: str | None = None  # --path: this directory's files at `/` instead
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES  # a larger request body is a 413 (deps)


def _split(csv: str) -> list[str]:
    return [s.strip() for s in csv.split(",") if s.strip()]


def _add_cors(app: FastAPI, cors: CorsSettings) -> None:
    origins = _split(cors.origins)
    local_only = origins == ["localhost"]
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[] if local_only else origins,
        allow_origin_regex=_LOCAL_ORIGIN if local_only else None,
        allow_methods=_split(cors.methods),
        allow_headers=_split(cors.headers),
        allow_credentials=cors.credentials,
    )


def _add_webui(app: FastAPI, settings: BridgeSettings) -> frozenset[tuple[str, str]]:
    """The page at `/` or --path's files (after the API's routes); the public ones."""
    if not settings.webui:
        return frozenset()
    if settings.static_path is not None:
        routes_webui.mount_static_path(app, settings.api_prefix, settings.static_path)
        return frozenset()  # as llama-server: --path's files need the key
    return routes_webui.add_builtin_page(app, settings.api_prefix)


class BridgeApp(FastAPI):
    """FastAPI, with a direct way in for the generation routes (rest_bridge.direct)."""

    direct: DirectRoutes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        direct = self.direct
        endpoint = direct.endpoint_for(scope) if direct is not None else None
        if direct is None or endpoint is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self  # as Starlette sets it: Request.app
        await direct.serve(endpoint, scope, receive, send)


def create_app(grpc_target: str, api_keys: Sequence[str] = (), *, api_prefix: str = "",
               sse_ping_interval: float = 30.0, cors: CorsSettings | None = CorsSettings(),
               grpc_credentials: grpc.ChannelCredentials | None = None, webui: bool = True,
               static_path: str | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> BridgeApp:
    """A FastAPI app serving llama-server's HTTP API through the gRPC service at grpc_target."""
    settings = BridgeSettings(grpc_target, tuple(api_keys), api_prefix.rstrip("/"),
                              sse_ping_interval, cors, grpc_credentials, webui, static_path,
                              max_body_bytes)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        up = open_upstream(settings.grpc_target, settings.grpc_credentials, CHANNEL_OPTIONS,
                           settings.sse_ping_interval)
        app.state.upstream = up
        try:
            yield
        finally:
            await up.channel.close()

    # No /docs or /openapi.json: the route surface is llama-server's, nothing more.
    app = BridgeApp(title="llama-grpc REST bridge", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None, redirect_slashes=False)
    app.state.settings = settings
    # routes_slot_files before routes_server: its POST /slots/import is not a slot id.
    for module in (routes_completion, routes_openai, routes_tokenize, routes_embedding,
                   routes_slot_files, routes_server):
        app.include_router(module.router, prefix=settings.api_prefix)
    install_error_handlers(app)
    public = public_routes(settings.api_prefix) | _add_webui(app, settings)
    keys = ApiKeys(settings.api_keys, public)
    # Added last = outermost: CORS answers preflights and decorates 401s too.
    app.add_middleware(ApiKeyMiddleware, keys=keys)
    if settings.cors is not None:
        _add_cors(app, settings.cors)
    app.direct = DirectRoutes(
        {settings.api_prefix + path: endpoint
         for module in (routes_completion, routes_openai, routes_embedding)
         for path, endpoint in module.routes.endpoints.items()},
        keys, vary_origin=settings.cors is not None)
    return app


__all__ = ["CHANNEL_OPTIONS", "BridgeApp", "BridgeSettings", "CorsSettings", "create_app"]
