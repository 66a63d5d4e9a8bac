"""Request bodies nested beyond rest_bridge.jsonio.MAX_JSON_DEPTH are a 400 in llama-server's
error shape, never a 500 (json.loads's RecursionError) and never a crash; the server goes on
answering. The depth measure itself is checked against the parsed value, for any JSON."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rest_bridge.errors import BridgeError
from rest_bridge.jsonio import MAX_JSON_DEPTH, check_depth, json_depth, parse_json

DEEP = 5000
DEEP_ARRAYS = b"[" * DEEP + b"]" * DEEP
DEEP_OBJECTS = b'{"a":' * DEEP + b"1" + b"}" * DEEP
LIMIT_TEXT = f"deeper than {MAX_JSON_DEPTH} levels"


def nested(depth: int, inner: bytes = b"1") -> bytes:
    """`depth` levels: objects and arrays in turn, outermost an object."""
    text = inner
    for level in reversed(range(depth)):
        text = b'{"k":' + text + b"}" if level % 2 == 0 else b"[" + text + b"]"
    return text


def depth_of(value: Any) -> int:
    """The nesting depth of a parsed value, level by level (no recursion: pytest's own stack
    is deep)."""
    depth, level = 0, [value]
    while level := [v for v in level if isinstance(v, dict | list)]:
        depth += 1
        level = [c for v in level for c in (v.values() if isinstance(v, dict) else v)]
    return depth


# -- the depth check ----------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "depth"), [
    (b"1", 0), (b'"[[["', 0), (b"[]", 1), (b"{}", 1), (b' [ [ ] , { "a" : [ ] } ] ', 3),
    (b'{"a": [{"b": [1, {"c": []}]}]}', 6),
    (b'["[[[[", "]]]]", "{{", "}"]', 1),  # brackets in strings do not count
    (rb'["\"[[[", "\\", "[\\\"]", "\\\\"]', 1),  # escaped quotes and backslashes
    ('["ünï[cødé", {"日本": ["]"]}]'.encode(), 3),
    ('[["utf-16"], {"é": "["}]'.encode("utf-16"), 2),  # json.loads reads UTF-16 and -32 too
    ('[[["utf-32"]]]'.encode("utf-32-be"), 3),
    (DEEP_ARRAYS, DEEP), (DEEP_OBJECTS, DEEP),
])
def test_json_depth(text: bytes, depth: int) -> None:
    assert json_depth(text) == depth
    if depth < 900:
        assert depth_of(json.loads(text)) == depth


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(alphabet=st.sampled_from('[]{}"\\/ aé\u2028\U0001f600\x00\n')),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(alphabet=st.sampled_from('[]{}"\\ k')), inner, max_size=4),
    max_leaves=40)


@given(_JSON, st.booleans(), st.sampled_from(["utf-8", "utf-16", "utf-32-le"]))
def test_json_depth_is_the_parsed_depth(value: Any, ascii_only: bool, encoding: str) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only).encode(encoding)
    assert json_depth(text) == depth_of(value)


def test_check_depth_at_the_limit() -> None:
    check_depth(nested(MAX_JSON_DEPTH))
    check_depth(b"[" + b"[1]," * 5000 + b"1]")  # many brackets, shallow
    check_depth(b'["' + b"[" * 5000 + b'"]')  # deep only in a string
    for body in (nested(MAX_JSON_DEPTH + 1), DEEP_ARRAYS, DEEP_OBJECTS):
        with pytest.raises(BridgeError) as caught:
            check_depth(body)
        assert caught.value.status == 400 and LIMIT_TEXT in caught.value.message


@pytest.mark.parametrize("body", [DEEP_ARRAYS, DEEP_OBJECTS, nested(MAX_JSON_DEPTH + 1)])
def test_parse_json_refuses_deep_bodies(body: bytes) -> None:
    with pytest.raises(BridgeError) as caught:
        parse_json(body)
    assert caught.value.body() == {"error": {
        "code": 400, "type": "invalid_request_error",
        "message": f"the request body nests JSON arrays and objects {LIMIT_TEXT}"}}


def test_parse_json_at_the_limit() -> None:
    assert depth_of(parse_json(nested(MAX_JSON_DEPTH))) == MAX_JSON_DEPTH


def test_a_recursion_error_is_a_400_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # Were check_depth to let a body through, json.loads's own failure is still a 400.
    monkeypatch.setattr("rest_bridge.jsonio.check_depth", lambda raw: None)
    with pytest.raises(BridgeError) as caught:
        parse_json(DEEP_ARRAYS)
    assert caught.value.status == 400 and LIMIT_TEXT in caught.value.message


def test_unclosed_and_invalid_bodies_are_400() -> None:
    for body in (b"[" * DEEP, b"]" * DEEP + b"[", b"[}" * DEEP, b'"' + b"[" * DEEP):
        with pytest.raises(BridgeError) as caught:
            parse_json(body)
        assert caught.value.status == 400


# -- through the real bridge and service --------------------------------------------------------
def assert_too_deep(r: httpx.Response) -> None:
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["code"] == 400 and err["type"] == "invalid_request_error"
    assert LIMIT_TEXT in err["message"]


DEEP_BODIES = {
    "arrays": DEEP_ARRAYS,
    "objects": DEEP_OBJECTS,
    "a deep field": b'{"prompt": "x", "n_predict": 1, "stream": true, "extra": '
                    + nested(MAX_JSON_DEPTH) + b"}",
}


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/completion", "/v1/chat/completions", "/v1/completions",
                                  "/tokenize"])
@pytest.mark.parametrize("origin", [False, True], ids=["direct", "full-stack"])
def test_deep_bodies_are_400_and_the_server_goes_on(http: httpx.Client, path: str,
                                                    origin: bool) -> None:
    # An Origin header takes a generation route through FastAPI's full stack, none the direct
    # path (rest_bridge.direct): both answer the same.
    headers = {"content-type": "application/json"}
    if origin:
        headers["origin"] = "http://example.test"
    for body in DEEP_BODIES.values():
        assert_too_deep(http.post(path, content=body, headers=headers))
    ok = http.post("/completion", json={"prompt": "Hello", "n_predict": 2}, headers=headers)
    assert ok.status_code == 200, ok.text
    chat = http.post("/v1/chat/completions", headers=headers, json={
        "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 2})
    assert chat.status_code == 200, chat.text


@pytest.mark.slow
def test_a_body_at_the_limit_is_served(http: httpx.Client) -> None:
    # MAX_JSON_DEPTH levels in all (the body's own object is the first), in a field the
    # service does not know and ignores, as llama-server ignores unknown fields.
    body = b'{"prompt": "Hello", "n_predict": 1, "extra": ' + nested(MAX_JSON_DEPTH - 1) + b"}"
    r = http.post("/completion", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text


@pytest.mark.slow
@pytest.mark.parametrize(("levels", "status"), [(17, 200), (45, 200), (70, 400)])
def test_a_deep_schema_meets_the_converters_limit_only(http: httpx.Client, levels: int,
                                                      status: int) -> None:
    """The bridge sends a json_schema as JSON text (json_schema_json), so protobuf's 100
    nested messages do not apply to it: a schema 45 `properties` levels deep works, as in
    llama-server; one beyond the converter's 64 levels is a 400, never a 500."""
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"x": schema}}
    r = http.post("/completion", json={"prompt": "x", "n_predict": 1, "json_schema": schema})
    assert r.status_code == status, r.text
    if status == 400:
        assert r.json()["error"]["type"] == "invalid_request_error"
        assert "json_schema" in r.json()["error"]["message"]
