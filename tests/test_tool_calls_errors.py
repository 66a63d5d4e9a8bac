"""Bad tool-call and reasoning input (issue 18's "Bad input" list): refused with INVALID_ARGUMENT
naming what is wrong, over gRPC and as HTTP 400 in llama-server's error shape through the bridge
(streamed or not), the server serving on: a tool whose schema cannot be compiled (an invalid
regex pattern, nesting past the converter's limit) names the tool; tool_choice naming a missing
tool; "required" with no tools; n <= 0 or absurd; a template that cannot render tools, with the
reason (chat_setup on the compiled template, and end to end with Gemma 2's)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_harness import chat_request
from llama.v1 import service_pb2_grpc
from rest.rest_harness import RestServer

import native
from native.testmodels.sources import llama_cpp_models_dir
from service.chat_template import ChatTemplate
from service.engine.params import ParamError
from service.tool_calls import chat_setup

TOOL: dict[str, Any] = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]
BAD_PATTERN: dict[str, Any] = {"type": "function", "function": {"name": "broken", "parameters": {
    "type": "object", "properties": {"code": {"type": "string", "pattern": "([a-z"}}}}}


def _deep(n: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(n):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


CASES: list[tuple[str, dict[str, Any], str]] = [
    ("named tool not in tools", {"tools": [TOOL], "tool_choice": {
        "type": "function", "function": {"name": "nope"}}}, "not one of the request's tools"),
    ("required without tools", {"tool_choice": "required"}, "has no tools"),
    ("bad pattern", {"tools": [TOOL, BAD_PATTERN]}, "tools[1] ('broken')"),
    # As JSON text: a Struct this deep would not even decode (protobuf's 100 levels).
    ("nested past the converter's limit", {"tools": [{"type": "function", "function": {
        "name": "deep", "parameters_json": json.dumps(_deep(70))}}]}, "tools[0] ('deep')"),
    ("unknown reasoning format", {"reasoning_format": "thoughts"}, "reasoning_format"),
    ("forcing choice beside a grammar", {"tools": [TOOL], "tool_choice": "required",
                                         "json_schema": {"type": "object"}}, "tool_choice"),
]


@pytest.mark.parametrize(("fields", "needle"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_refused_over_grpc(grpc_stub: Any, fields: dict[str, Any], needle: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        list(grpc_stub.ChatCompletion(chat_request(messages=MESSAGES, n_predict=4, **fields),
                                      timeout=60))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in str(err.value.details())
    # The server serves on.
    ok = list(grpc_stub.ChatCompletion(chat_request(messages=MESSAGES, n_predict=2), timeout=60))
    assert ok[-1].choices[0].finish_reason


def test_template_that_cannot_render_tools(tiny_bpe_path: Path) -> None:
    from native.testmodels.sources import chat_template
    template = ChatTemplate.compile(chat_template("google-gemma-2-2b-it"))
    assert not template.caps.supports_tools
    model = native.Model(tiny_bpe_path)
    try:
        req = chat_request(messages=MESSAGES, tools=[TOOL])
        with pytest.raises(ParamError, match="cannot render tools"):
            chat_setup(req, [TOOL], template, "prompt", "auto", False, model.vocab)
        # tool_choice "none": the tools only reach the template, nothing is refused
        req = chat_request(messages=MESSAGES, tools=[TOOL], tool_choice="none")
        setup = chat_setup(req, [TOOL], template, "prompt", "auto", False, model.vocab)
        assert not setup.grammar
    finally:
        model.close()


@pytest.mark.slow
def test_long_auto_answers_with_tools_keep_the_server_up(grpc_stub: Any) -> None:
    """A regression: a lazy grammar on a text trigger made libllama throw through its C API
    when the token that completed the trigger ran past it (`{$`), ending the process."""
    for seed in range(3):
        msgs = list(grpc_stub.ChatCompletion(chat_request(
            messages=MESSAGES, tools=[TOOL], n_predict=300, ignore_eos=True, seed=seed,
            temperature=1.0), timeout=120))
        assert msgs[-1].choices[0].finish_reason in ("length", "tool_calls")


# -- through the REST bridge (HTTP 400 in llama-server's shape), and a template without tools --
REST_CASES: list[tuple[str, dict[str, Any], str]] = [
    *[(name, fields, needle) for name, fields, needle in CASES
      if "parameters_json" not in json.dumps(fields)],
    ("nested past the converter's limit", {"tools": [{"type": "function", "function": {
        "name": "deep", "parameters": _deep(70)}}]}, "tools[0] ('deep')"),
    ("n 0", {"n": 0}, "between 1 and"),
    ("n negative", {"n": -1}, "between 1 and"),
    ("n absurd", {"n": 1 << 30}, "between 1 and"),
]


@pytest.fixture(scope="module")
def rest(tiny_bpe_path: Path) -> Iterator[RestServer]:
    srv = RestServer(tiny_bpe_path, ctx=2048, parallel=2)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.mark.slow
@pytest.mark.parametrize(("fields", "needle"), [c[1:] for c in REST_CASES],
                         ids=[c[0] for c in REST_CASES])
def test_refused_through_the_bridge(rest: RestServer, fields: dict[str, Any], needle: str) -> None:
    body = {"messages": MESSAGES, "max_tokens": 4, **fields}
    with httpx.Client(base_url=rest.url, timeout=60) as http:
        for stream in (False, True):
            r = http.post("/v1/chat/completions", json={**body, "stream": stream})
            assert r.status_code == 400, r.text
            error = r.json()["error"]
            assert error["type"] == "invalid_request_error" and needle in error["message"]
        ok = http.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 2})
        assert ok.status_code == 200  # the server serves on


@pytest.mark.slow
def test_template_that_cannot_render_tools_end_to_end(tiny_bpe_path: Path) -> None:
    path = llama_cpp_models_dir() / "templates" / "google-gemma-2-2b-it.jinja"
    srv = RestServer(tiny_bpe_path, "--chat-template-file", str(path), ctx=2048, parallel=1)
    try:
        srv.wait_ready()
        with grpc.insecure_channel(srv.grpc_target) as channel:
            stub = service_pb2_grpc.LlamaServerStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                list(stub.ChatCompletion(chat_request(messages=MESSAGES, tools=[TOOL]),
                                         timeout=60))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "cannot render tools" in str(err.value.details())
        with httpx.Client(base_url=srv.url, timeout=60) as http:
            r = http.post("/v1/chat/completions", json={"messages": MESSAGES, "tools": [TOOL]})
            assert r.status_code == 400 and "cannot render tools" in r.json()["error"]["message"]
            r = http.post("/v1/chat/completions", json={
                "messages": MESSAGES, "tools": [TOOL], "tool_choice": "none", "max_tokens": 2})
            assert r.status_code == 200, r.text  # "none": the tools only reach the template
    finally:
        srv.stop()
