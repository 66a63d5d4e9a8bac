"""Bad tool-call and reasoning input (issue 18): refused with INVALID_ARGUMENT naming what is
wrong, over gRPC and as HTTP 400 through the bridge, the server serving on; and the checks of
service.tool_calls.chat_setup on a real compiled template that cannot render tools."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_harness import chat_request

import native
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
