"""The page at `/`, where llama-server serves its web UI: our own chat page (rest_bridge/webui/,
plain HTML, CSS and JavaScript modules, nothing fetched from the network), or with `--path DIR`
that directory's static files instead, or nothing with `--no-webui` (then `/` is 404).

As in llama-server, the built-in page's files need no API key (the page asks for one when the
API answers 401), while files served from `--path` do, like every other route.

The built-in files are read once, at start-up, and served from memory with an ETag, so a
reload is a 304; their Content-Security-Policy allows scripts, styles and connections only
from this origin, a second guard behind the page's own escaping of model output.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

WEBUI_DIR = Path(__file__).with_name("webui")
_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_READ_METHODS = ("GET", "HEAD")


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def load_assets(directory: Path = WEBUI_DIR) -> dict[str, Asset]:
    """The page's files by name (`app.js`), each with its type and a content hash as ETag."""
    assets: dict[str, Asset] = {}
    for path in sorted(directory.iterdir()):
        media_type = _MEDIA_TYPES.get(path.suffix)
        if media_type is None or not path.is_file():
            continue  # only what the page is made of: no stray editor or cache files
        body = path.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
        assets[path.name] = Asset(body, media_type, etag)
    if "index.html" not in assets:
        raise RuntimeError(f"the web page is missing: no index.html in {directory}")
    return assets


def _asset_endpoint(asset: Asset) -> Callable[[Request], Awaitable[Response]]:
    headers = {"ETag": asset.etag, "Cache-Control": "no-cache",
               "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
               "Referrer-Policy": "no-referrer"}

    async def serve(request: Request) -> Response:
        tags = request.headers.get("if-none-match", "").split(",")
        if asset.etag in (t.strip().removeprefix("W/") for t in tags):
            return Response(status_code=304, headers=headers)
        return Response(asset.body, media_type=asset.media_type, headers=headers)

    return serve


def add_builtin_page(app: Starlette, api_prefix: str) -> frozenset[tuple[str, str]]:
    """Serve the built-in page under api_prefix; returns its (method, path) pairs, which need
    no API key."""
    assets = load_assets()
    paths = {api_prefix + "/": assets["index.html"]}
    paths.update({f"{api_prefix}/{name}": asset for name, asset in assets.items()})
    for path, asset in paths.items():
        app.add_route(path, _asset_endpoint(asset), methods=list(_READ_METHODS))
    return frozenset((method, path) for path in paths for method in _READ_METHODS)


class _ReadOnlyStatic:
    """StaticFiles answering only GET and HEAD: another method on a path no route has stays
    404, as it was before the mount (StaticFiles itself says 405)."""

    def __init__(self, directory: str) -> None:
        self._files = StaticFiles(directory=directory, html=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in _READ_METHODS:
            raise HTTPException(404)
        await self._files(scope, receive, send)


def mount_static_path(app: Starlette, api_prefix: str, directory: str) -> None:
    """Serve directory's files under api_prefix (`index.html` for a directory), after every
    route of the API, which keep their paths."""
    if not Path(directory).is_dir():
        raise ValueError(f"--path: not a directory: {directory}")
    app.mount(api_prefix or "/", _ReadOnlyStatic(directory))


__all__ = ["CSP", "WEBUI_DIR", "Asset", "add_builtin_page", "load_assets", "mount_static_path"]
