"""Tool calls end to end (issue 18): the real service with each format's real chat template
(--chat-template-file on the random-weight tiny-bpe model), `tool_choice: "required"` or a named
function, through gRPC, the REST bridge and the openai SDK, streaming and not. Random weights
write garbage, so the grammar that "required" brings is what makes the calls valid: the
arguments must be valid JSON for the tool's schema, and the streamed deltas must add up to the
non-streaming answer (greedy sampling writes the same tokens both times)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
import pytest
from grpc_harness import chat_request
from llama.v1 import service_pb2_grpc
from rest.rest_harness import RestServer, serving, sse_events

from native.testmodels.sources import llama_cpp_models_dir

pytestmark = pytest.mark.slow

TEMPLATES = (
    "meta-llama-Llama-3.1-8B-Instruct",  # llama 3.x with builtin tools
    "meta-llama-Llama-3.2-3B-Instruct",  # llama 3.x
    "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use",  # hermes 2 pro
    "meetkai-functionary-medium-v3.1",
    "meetkai-functionary-medium-v3.2",
    "mistralai-Mistral-Nemo-Instruct-2407",
    "fireworks-ai-llama-3-firefunction-v2",
    "CohereForAI-c4ai-command-r7b-12-2024-tool_use",
    "llama-cpp-deepseek-r1",  # opens the thinking block itself
    "CohereForAI-c4ai-command-r-plus-tool_use",  # generic
)
WEATHER = {"type": "object", "properties": {
    "city": {"type": "string", "enum": ["Paris", "Rome"]},
    "days": {"type": "integer", "minimum": 1, "maximum": 9}}, "required": ["city", "days"]}
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                      "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "description": "Time",
                                      "parameters": {"type": "object", "properties": {
                                          "zone": {"type": "string", "enum": ["UTC", "CET"]}},
                                          "required": ["zone"]}}},
]
MESSAGES: list[Any] = [{"role": "user", "content": "What is the weather in Paris?"}]
# One call: with parallel calls allowed, a random model may go on calling until max_tokens.
GREEDY: dict[str, Any] = {"temperature": 0, "seed": 1, "max_tokens": 160,
                          "parallel_tool_calls": False}


@contextmanager
def template_server(model: Path, template: str, ctx: int, parallel: int) -> Iterator[RestServer]:
    """The service and its bridge on `model` with llama.cpp's chat template `template`."""
    path = llama_cpp_models_dir() / "templates" / f"{template}.jinja"
    with serving(RestServer(model, "--chat-template-file", str(path), ctx=ctx,
                            parallel=parallel)) as srv:
        yield srv


@pytest.fixture(scope="module", params=TEMPLATES)
def server(request: pytest.FixtureRequest, tiny_bpe_path: Path) -> Iterator[RestServer]:
    with template_server(tiny_bpe_path, request.param, ctx=4096, parallel=2) as srv:
        yield srv


def check_call(name: str, arguments: str) -> None:
    """A call of one of TOOLS whose arguments are valid for its schema."""
    args = json.loads(arguments)
    if name == "get_weather":
        assert args["city"] in ("Paris", "Rome") and 1 <= args["days"] <= 9
    else:
        assert name == "get_time" and args["zone"] in ("UTC", "CET")


def _calls(message: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["function"]["name"], c["function"]["arguments"]) for c in message["tool_calls"]]


def test_required_over_grpc(server: RestServer) -> None:
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = service_pb2_grpc.LlamaServerStub(channel)
        # cache_prompt off: the streamed request must decode its prompt as the first did (from
        # the first's cache, llama.cpp's other batch sizes can flip a near-tie of a random model)
        fields = {"messages": MESSAGES, "tools": TOOLS, "tool_choice": "required",
                  "n_predict": 160, "temperature": 0, "seed": 1, "parallel_tool_calls": False,
                  "cache_prompt": False}
        [whole] = stub.ChatCompletion(chat_request(**fields, stream=False), timeout=120)
        choice = whole.choices[0]
        assert choice.finish_reason == "tool_calls"
        calls = [(c.function.name, c.function.arguments) for c in choice.message.tool_calls]
        assert len(calls) == 1
        assert all(c.id and c.type == "function" for c in choice.message.tool_calls)
        for call in calls:
            check_call(*call)
        assert not choice.message.HasField("content")
        streamed: dict[int, list[str]] = {}
        finish = ""
        for msg in stub.ChatCompletion(chat_request(**fields, stream=True), timeout=120):
            for c in msg.choices:
                for tc in c.delta.tool_calls:
                    if tc.id:  # the first delta of a call names it
                        assert tc.HasField("index") and tc.index == len(streamed)
                        assert tc.type == "function" and tc.function.arguments == ""
                        streamed[tc.index] = [tc.function.name, ""]
                    else:
                        assert not tc.function.name
                        streamed[tc.index][1] += tc.function.arguments
                finish = c.finish_reason or finish
        assert [tuple(v) for _, v in sorted(streamed.items())] == calls
        assert finish == "tool_calls"


def test_named_function_through_the_bridge(server: RestServer) -> None:
    body = {"messages": MESSAGES, "tools": TOOLS, **GREEDY,
            "tool_choice": {"type": "function", "function": {"name": "get_time"}}}
    with httpx.Client(base_url=server.url, timeout=120) as http:
        r = http.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        assert choice["message"]["content"] is None
        calls = _calls(choice["message"])
        assert [n for n, _ in calls] == ["get_time"] * len(calls)
        for call in calls:
            check_call(*call)
        r = http.post("/v1/chat/completions", json={**body, "stream": True})
        deltas = [json.loads(e) for e in sse_events(r.text) if e != "[DONE]"]
        first = [tc for d in deltas for c in d["choices"]
                 for tc in c["delta"].get("tool_calls", []) if "id" in tc]
        assert first and all(set(tc) == {"index", "id", "type", "function"} for tc in first)
        assert all(tc["function"] == {"name": "get_time", "arguments": ""} for tc in first)


def test_openai_sdk_stream_accumulates_to_the_whole_answer(server: RestServer) -> None:
    with openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0,
                       timeout=120.0) as client:
        whole = client.chat.completions.create(
            model="m", messages=MESSAGES, tools=TOOLS, tool_choice="required", temperature=0,
            seed=1, max_tokens=160, parallel_tool_calls=False)
        with client.chat.completions.stream(
                model="m", messages=MESSAGES, tools=TOOLS, tool_choice="required",
                temperature=0, seed=1, max_tokens=160, parallel_tool_calls=False) as stream:
            final = stream.get_final_completion()
    a, b = whole.choices[0], final.choices[0]
    assert a.finish_reason == b.finish_reason == "tool_calls"
    assert a.message.tool_calls and b.message.tool_calls
    calls_a = [(c.function.name, c.function.arguments) for c in a.message.tool_calls
               if c.type == "function"]
    calls_b = [(c.function.name, c.function.arguments) for c in b.message.tool_calls
               if c.type == "function"]
    assert len(calls_a) == len(a.message.tool_calls) == 1
    assert calls_a == calls_b
    for call in calls_a:
        check_call(*call)
