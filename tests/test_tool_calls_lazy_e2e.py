"""tool_choice "auto" end to end (issue 18, constrained output): the real service on the
random-weight tiny-bpe model (Llama 3's vocabulary) with a format's real chat template. Once a
call starts, the lazy grammar (service.engine.lazy_grammar) holds its arguments to the tool's
schema, though the weights are random: for Functionary v3.2 the call starts in generated
tokens (a logit bias makes the first one "get", a tool-name prefix, so the recipient line
names a function); for Llama 3.x (a bare `{"name": "` call, four tokens here) and Hermes
(`<tool_call>`, four tokens here) it starts in a prefilled assistant message, which the answer
continues. Text that already breaks the grammar leaves the answer unconstrained: the server
answers it and the next request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_harness import chat_request
from llama.v1 import service_pb2_grpc
from rest.rest_harness import RestServer
from test_tool_calls_e2e import TOOLS, check_call, template_server

pytestmark = pytest.mark.slow

FUNCTIONARY = "meetkai-functionary-medium-v3.2"
LLAMA32 = "meta-llama-Llama-3.2-3B-Instruct"
HERMES = "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use"
USER: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
GREEDY: dict[str, Any] = {"temperature": 0, "seed": 1, "max_tokens": 120,
                          "parallel_tool_calls": False, "tools": TOOLS, "tool_choice": "auto"}
# The answer's start, written as a prefilled assistant message: (valid, already broken).
PREFILLS = {
    LLAMA32: ('{"name": "', '{"name": "get_news'),
    HERMES: ('<tool_call>\n{"name": "', "<tool_call>{$"),
}


@pytest.fixture(scope="module", params=[FUNCTIONARY, LLAMA32, HERMES])
def server(request: pytest.FixtureRequest, tiny_bpe_path: Path) -> Iterator[RestServer]:
    with template_server(tiny_bpe_path, request.param, ctx=2048, parallel=1) as srv:
        srv.template = request.param  # type: ignore[attr-defined]
        yield srv


def _check_call(call: dict[str, Any]) -> None:
    check_call(call["function"]["name"], call["function"]["arguments"])


def _body(template: str, broken: bool) -> dict[str, Any]:
    if template == FUNCTIONARY:  # the first generated token starts the recipient line
        return {**GREEDY, "messages": USER, "logit_bias": [["Hello" if broken else "get", 100]]}
    prefill = PREFILLS[template][broken]
    return {**GREEDY, "messages": [*USER, {"role": "assistant", "content": prefill}]}


def _chat(server: RestServer, body: dict[str, Any]) -> dict[str, Any]:
    with httpx.Client(base_url=server.url, timeout=300) as http:
        r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    choice: dict[str, Any] = r.json()["choices"][0]
    return choice


def test_once_a_call_starts_it_follows_the_schema(server: RestServer) -> None:
    choice = _chat(server, _body(server.template, broken=False))  # type: ignore[attr-defined]
    assert choice["finish_reason"] == "tool_calls", choice
    [call] = choice["message"]["tool_calls"]
    _check_call(call)


def test_the_same_over_grpc_streamed(server: RestServer) -> None:
    body = _body(server.template, broken=False)  # type: ignore[attr-defined]
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = service_pb2_grpc.LlamaServerStub(channel)
        args, name, finish = "", "", ""
        for msg in stub.ChatCompletion(chat_request(**body, stream=True), timeout=300):
            for c in msg.choices:
                for tc in c.delta.tool_calls:
                    name = tc.function.name or name
                    args += tc.function.arguments
                finish = c.finish_reason or finish
    assert finish == "tool_calls"
    _check_call({"function": {"name": name, "arguments": args}})


def test_text_that_already_breaks_the_grammar_is_answered(server: RestServer) -> None:
    choice = _chat(server, _body(server.template, broken=True))  # type: ignore[attr-defined]
    assert choice["finish_reason"] in ("stop", "length", "tool_calls")
    # the server is up and serves the next request
    choice = _chat(server, _body(server.template, broken=False))  # type: ignore[attr-defined]
    assert choice["finish_reason"] == "tool_calls"
