"""Errors in the documented shape `{"error": {"code", "message", "type"}}` with the right HTTP
status: bad JSON, wrong types, unknown endpoints, wrong methods, disabled endpoints, failures
the service reports, and API keys."""

from __future__ import annotations

import httpx
import pytest
from rest_harness import API_KEY, RestServer

pytestmark = pytest.mark.slow


def assert_error(r: httpx.Response, status: int, type_: str) -> dict[str, object]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"error"}
    err: dict[str, object] = body["error"]
    assert err["code"] == status and err["type"] == type_
    assert isinstance(err["message"], str) and err["message"]
    return err


@pytest.mark.parametrize("raw", [b"{bad json", b"[1, 2]", b'"text"', b"\xff\xfe"])
def test_bad_json_is_400(http: httpx.Client, raw: bytes) -> None:
    r = http.post("/completion", content=raw, headers={"content-type": "application/json"})
    assert_error(r, 400, "invalid_request_error")


@pytest.mark.parametrize("body", [
    {"prompt": "x", "n_predict": "many"},
    {"prompt": "x", "temperature": [1]},
    {"prompt": "x", "stream": "yes"},
    {"prompt": "x", "samplers": 5},
])
def test_wrong_types_are_400(http: httpx.Client, body: dict[str, object]) -> None:
    assert_error(http.post("/completion", json=body), 400, "invalid_request_error")


def test_wrong_types_on_other_routes(http: httpx.Client) -> None:
    assert_error(http.post("/tokenize", json={"content": 5}), 400, "invalid_request_error")
    assert_error(http.post("/detokenize", json={"tokens": ["a"]}), 400, "invalid_request_error")
    assert_error(http.post("/v1/chat/completions", json={"messages": "hi"}), 400,
                 "invalid_request_error")
    assert_error(http.post("/slots/zero?action=erase", json={}), 400, "invalid_request_error")


def test_invalid_requests_the_service_rejects_are_400(http: httpx.Client) -> None:
    assert_error(http.post("/completion", json={"prompt": "x", "grammar": "not gbnf ::"}), 400,
                 "invalid_request_error")
    # Streaming too: a failure before the first event is an HTTP status, not an SSE event.
    assert_error(http.post("/completion", json={"prompt": "x", "grammar": "nope ::",
                                                "stream": True}), 400, "invalid_request_error")
    assert_error(http.post("/v1/chat/completions", json={"messages": []}), 400,
                 "invalid_request_error")


def test_unknown_endpoint_is_404(http: httpx.Client) -> None:
    err = assert_error(http.get("/no/such/endpoint"), 404, "not_found_error")
    assert err["message"] == "File Not Found"
    assert_error(http.post("/v2/completions", json={}), 404, "not_found_error")


def test_wrong_method_is_405(http: httpx.Client) -> None:
    r = http.get("/completion")
    assert_error(r, 405, "invalid_request_error")
    assert "POST" in r.headers["allow"]
    assert_error(http.delete("/v1/models"), 405, "invalid_request_error")


def test_disabled_endpoints_are_501(http: httpx.Client) -> None:
    # Off unless the server runs with --metrics / --props, as in llama-server.
    assert_error(http.get("/metrics"), 501, "not_supported_error")
    assert_error(http.post("/props", json={}), 501, "not_supported_error")


# -- API keys ---------------------------------------------------------------------------------
def test_api_key_required(keyed_server: RestServer) -> None:
    url = keyed_server.url
    body = {"prompt": "Hi", "n_predict": 1}
    err = assert_error(httpx.post(url + "/completion", json=body), 401, "authentication_error")
    assert err["message"] == "Invalid API Key"
    assert_error(httpx.post(url + "/completion", json=body,
                            headers={"Authorization": "Bearer wrong"}), 401,
                 "authentication_error")
    assert_error(httpx.get(url + "/v1/models"), 401, "authentication_error")
    assert_error(httpx.post(url + "/tokenize", json={"content": "x"}), 401,
                 "authentication_error")


def test_api_key_accepted(keyed_server: RestServer) -> None:
    url = keyed_server.url
    body = {"prompt": "Hi", "n_predict": 1}
    for headers in ({"Authorization": f"Bearer {API_KEY}"}, {"X-Api-Key": API_KEY}):
        r = httpx.post(url + "/completion", json=body, headers=headers, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["stop"] is True
    r = httpx.post(url + "/v1/chat/completions", timeout=60,
                   headers={"Authorization": f"Bearer {API_KEY}"},
                   json={"messages": [{"role": "user", "content": "x"}], "max_tokens": 1,
                         "stream": True})
    assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")


def test_public_routes_need_no_key(keyed_server: RestServer) -> None:
    assert httpx.get(keyed_server.url + "/health").json() == {"status": "ok"}
    assert httpx.get(keyed_server.url + "/props").status_code == 200
    # Only GET /props is public.
    assert_error(httpx.post(keyed_server.url + "/props", json={}), 401, "authentication_error")
