"""Reasoning end to end (issue 18): the real service with a template that opens the thinking
block itself (the DeepSeek R1 Distill Qwen template ends its prompt with `<think>`), on the random
tiny-bpe model: its answer never closes the block, so all of it is reasoning_content. Streamed
reasoning deltas add up to the whole message, over gRPC and through the bridge;
reasoning_format "none" gives the same text as content; enable_thinking false closes the block
in the prompt, and the answer is content again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from grpc_harness import chat_request
from reasoning_harness import llama_stub, r1_server
from rest.rest_harness import RestServer, sse_events

pytestmark = pytest.mark.slow
MESSAGES: list[Any] = [{"role": "user", "content": "Why is the sky blue?"}]
GREEDY: dict[str, Any] = {"temperature": 0, "n_predict": 16}


@pytest.fixture(scope="module")
def server(tiny_bpe_path: Path) -> Iterator[RestServer]:
    with r1_server(tiny_bpe_path) as srv:
        yield srv


@pytest.fixture(scope="module")
def stub(server: RestServer) -> Iterator[Any]:
    with llama_stub(server) as stub:
        yield stub


def _whole(stub: Any, **fields: Any) -> Any:
    [msg] = stub.ChatCompletion(chat_request(messages=MESSAGES, stream=False, **GREEDY,
                                             **fields), timeout=60)
    return msg.choices[0].message


def test_answer_in_an_opened_block_is_reasoning(stub: Any) -> None:
    whole = _whole(stub)
    assert whole.reasoning_content and not whole.content
    reasoning = "".join(
        c.delta.reasoning_content
        for m in stub.ChatCompletion(chat_request(messages=MESSAGES, **GREEDY), timeout=60)
        for c in m.choices)
    assert reasoning == whole.reasoning_content
    plain = _whole(stub, reasoning_format="none")
    assert not plain.reasoning_content
    # llama-server parses the prompt's end with the answer: without a split, the block the
    # prompt opened is content; with one, the prompt's newline after `<think>` starts the reasoning
    assert plain.content == "<think>" + whole.reasoning_content
    assert whole.reasoning_content.startswith("\n")


def test_enable_thinking_false_closes_the_block(stub: Any) -> None:
    whole = _whole(stub, chat_template_kwargs={"enable_thinking": False})
    assert whole.content and not whole.reasoning_content


def test_through_the_bridge(server: RestServer, stub: Any) -> None:
    expected = _whole(stub).reasoning_content
    body = {"messages": MESSAGES, "temperature": 0, "max_tokens": 16}
    with httpx.Client(base_url=server.url, timeout=60) as http:
        out = http.post("/v1/chat/completions", json=body).json()
        message = out["choices"][0]["message"]
        assert message["reasoning_content"] == expected and message["content"] == ""
        r = http.post("/v1/chat/completions", json={**body, "stream": True})
        deltas = [c["delta"] for e in sse_events(r.text) if e != "[DONE]"
                  for c in json.loads(e)["choices"]]
        assert "".join(d.get("reasoning_content", "") for d in deltas) == expected
        assert not any(d.get("content") for d in deltas)
