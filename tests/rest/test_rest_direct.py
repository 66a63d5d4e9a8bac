"""The generation routes' direct way in (rest_bridge.direct) answers exactly as FastAPI's full
stack does. A request with an `Origin` header takes the full stack (CORS has work to do), the
same request without one the direct path, so each case is sent both ways and compared: status,
content type, error bodies, generated text, `Vary`, and the API key check. Also CORS itself
(preflights, allowed origins), which only the full stack handles."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from rest_harness import API_KEY, RestServer, free_port, sse_events

from rest_bridge.app import create_app
from rest_bridge.auth import ApiKeys
from rest_bridge.direct import DirectRoutes

pytestmark = pytest.mark.slow

ORIGIN = "http://example.test"
GENERATION_ROUTES = ["/completion", "/completions", "/v1/completions", "/chat/completions",
                     "/v1/chat/completions"]


def both_ways(client: httpx.Client, path: str, **kwargs: Any
              ) -> tuple[httpx.Response, httpx.Response]:
    """The request without an Origin header (direct path), then with one (full stack)."""
    headers = dict(kwargs.pop("headers", {}))
    direct = client.post(path, headers=headers, **kwargs)
    full = client.post(path, headers={**headers, "Origin": ORIGIN}, **kwargs)
    assert "access-control-allow-origin" not in direct.headers
    assert full.headers["access-control-allow-origin"] == ORIGIN
    return direct, full


def assert_same_error(direct: httpx.Response, full: httpx.Response, status: int) -> None:
    for r in (direct, full):
        assert r.status_code == status, r.text
        assert r.headers["content-type"] == "application/json; charset=utf-8"
        assert "Origin" in r.headers["vary"]
    assert direct.json() == full.json()
    assert direct.json()["error"]["code"] == status


@pytest.mark.parametrize("path", ["/completion", "/v1/chat/completions"])
@pytest.mark.parametrize("content", [
    b"{bad json", b"[1, 2]", b'{"prompt": "x", "n_predict": "many"}',
    b'{"prompt": "x", "grammar": "nope ::", "stream": true}'])
def test_errors_are_the_same_either_way(http: httpx.Client, path: str, content: bytes) -> None:
    direct, full = both_ways(http, path, content=content,
                             headers={"content-type": "application/json"})
    assert_same_error(direct, full, 400)


def test_unimplemented_infill_is_the_same_either_way(http: httpx.Client) -> None:
    direct, full = both_ways(http, "/infill", json={"input_prefix": "def f(", "n_predict": 1})
    assert_same_error(direct, full, 501)


def _completion_body(path: str, stream: bool) -> dict[str, Any]:
    gen = {"n_predict": 6, "max_tokens": 6, "temperature": 0, "seed": 7, "stream": stream,
           "ignore_eos": True}
    if "chat" in path:
        return {**gen, "messages": [{"role": "user", "content": "Say something"}]}
    return {**gen, "prompt": "Once upon a time"}


def _text(r: httpx.Response, stream: bool) -> str:
    if not stream:
        body = r.json()
        if "choices" in body:
            choice = body["choices"][0]
            return str(choice["message"]["content"] if "message" in choice else choice["text"])
        return str(body["content"])
    text = []
    for payload in sse_events(r.text):
        if payload == "[DONE]":
            continue
        event = json.loads(payload)
        if "choices" in event:
            for c in event["choices"]:
                text.append((c.get("delta") or {}).get("content") or c.get("text") or "")
        else:
            text.append(event.get("content", ""))
    return "".join(text)


@pytest.mark.parametrize("path", GENERATION_ROUTES)
@pytest.mark.parametrize("stream", [False, True])
def test_generations_are_the_same_either_way(http: httpx.Client, path: str,
                                             stream: bool) -> None:
    direct, full = both_ways(http, path, json=_completion_body(path, stream))
    for r in (direct, full):
        assert r.status_code == 200, r.text
        assert "Origin" in r.headers["vary"]
    assert direct.headers["content-type"] == full.headers["content-type"]
    assert direct.headers["content-type"].startswith(
        "text/event-stream" if stream else "application/json")
    assert _text(direct, stream) == _text(full, stream) != ""
    if stream:
        assert direct.text.endswith("\n\n") and full.text.endswith("\n\n")
        assert direct.text.endswith("data: [DONE]\n\n") == full.text.endswith("data: [DONE]\n\n")


def test_api_key_is_checked_either_way(keyed_server: RestServer) -> None:
    with httpx.Client(base_url=keyed_server.url, timeout=60) as client:
        body = {"prompt": "Hi", "n_predict": 1}
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            direct, full = both_ways(client, "/completion", json=body, headers=headers)
            assert_same_error(direct, full, 401)
            assert direct.json()["error"]["message"] == "Invalid API Key"
        direct, full = both_ways(client, "/v1/completions", json=body,
                                 headers={"X-Api-Key": API_KEY})
        assert direct.status_code == full.status_code == 200


def test_cors_preflight_and_simple_requests(keyed_server: RestServer) -> None:
    # A preflight needs no key (browsers send none) and is answered by CORS itself.
    r = httpx.options(keyed_server.url + "/completion", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in r.headers["access-control-allow-methods"]
    assert r.headers["access-control-allow-credentials"] == "true"
    # The public routes carry CORS headers too, and a 401 does (so a page can read it).
    r = httpx.get(keyed_server.url + "/health", headers={"Origin": ORIGIN})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
    r = httpx.get(keyed_server.url + "/v1/models", headers={"Origin": ORIGIN})
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == ORIGIN


# -- which requests take the direct path (pure logic) ------------------------------------------
async def _endpoint(_request: Any) -> Any:
    raise AssertionError("not called")


def _scope(method: str = "POST", path: str = "/completion",
           headers: list[tuple[bytes, bytes]] | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path,
            "headers": headers or [(b"content-type", b"application/json")], **extra}


def test_direct_path_only_where_it_changes_nothing() -> None:
    routes = DirectRoutes({"/completion": _endpoint}, ApiKeys((), ()), vary_origin=True)
    assert routes.endpoint_for(_scope()) is _endpoint
    assert routes.endpoint_for(_scope(method="GET")) is None  # a 405 from the router
    assert routes.endpoint_for(_scope(method="OPTIONS")) is None  # a CORS preflight
    assert routes.endpoint_for(_scope(path="/completion/")) is None
    assert routes.endpoint_for(_scope(path="/tokenize")) is None
    assert routes.endpoint_for(_scope(headers=[(b"origin", b"http://x")])) is None
    assert routes.endpoint_for(_scope(root_path="/api")) is None
    assert routes.endpoint_for({"type": "websocket", "path": "/completion"}) is None


@pytest.mark.parametrize("prefix", ["", "/llama"])
def test_the_app_takes_the_direct_path_for_generation_posts(prefix: str) -> None:
    # Both paths answer alike (above), so count the direct path's use: without it every test
    # here would pass through the full stack alone.
    app = create_app(f"127.0.0.1:{free_port()}", api_prefix=prefix)
    assert app.direct is not None
    served: list[str] = []
    serve = app.direct.serve

    async def counting(endpoint: Any, scope: Any, receive: Any, send: Any) -> None:
        served.append(scope["path"])
        await serve(endpoint, scope, receive, send)

    app.direct.serve = counting  # type: ignore[method-assign]

    async def go() -> list[int]:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://bridge") as c:
            async def bad_json(path: str, **headers: str) -> int:
                r = await c.post(prefix + path, content=b"{",
                                 headers={"content-type": "application/json", **headers})
                return r.status_code

            return [await bad_json("/completion"), await bad_json("/v1/chat/completions"),
                    await bad_json("/completion", Origin=ORIGIN), await bad_json("/tokenize")]

    assert asyncio.run(go()) == [400, 400, 400, 400]
    assert served == [prefix + "/completion", prefix + "/v1/chat/completions"]
