"""Through the REST bridge: a conversation ending with an assistant message is continued and
the answer starts with that message's text (llama-server's prefill and continue_final_message,
streamed or not), and `usage` for n choices counts the prompt once and every choice's tokens."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from rest_harness import sse_events

pytestmark = pytest.mark.slow

USER = {"role": "user", "content": "Hello there"}
PREFILLED = [USER, {"role": "assistant", "content": "Once upon"}]
GREEDY = {"max_tokens": 3, "temperature": 0.0}


def _content(http: httpx.Client, **body: Any) -> str:
    r = http.post("/v1/chat/completions", json={**GREEDY, **body})
    assert r.status_code == 200, r.text
    content: str = r.json()["choices"][0]["message"]["content"]
    return content


def _streamed(http: httpx.Client, **body: Any) -> list[str]:
    """The content deltas of a streamed answer, in order."""
    r = http.post("/v1/chat/completions", json={**GREEDY, **body, "stream": True})
    assert r.status_code == 200, r.text
    pieces = []
    for data in sse_events(r.text):
        if data != "[DONE]":
            for choice in json.loads(data)["choices"]:
                if choice["delta"].get("content"):
                    pieces.append(choice["delta"]["content"])
    return pieces


def test_a_trailing_assistant_message_starts_the_answer(http: httpx.Client) -> None:
    answer = _content(http, messages=PREFILLED)
    assert answer.startswith("Once upon") and len(answer) > len("Once upon")
    # the same greedy text streamed; the first delta carries the prefilled text too
    pieces = _streamed(http, messages=PREFILLED)
    assert "".join(pieces) == answer and pieces[0].startswith("Once upon")


def test_continue_final_message_streams_only_what_is_new_unless_echo(
        http: httpx.Client) -> None:
    asked = {"messages": PREFILLED, "continue_final_message": True,
             "add_generation_prompt": False}
    answer = _content(http, **asked)
    assert answer == _content(http, messages=PREFILLED)  # the whole answer includes it
    assert "Once upon" + "".join(_streamed(http, **asked)) == answer
    assert "".join(_streamed(http, **asked, echo=True)) == answer
    assert _content(http, **{**asked, "continue_final_message": "content"}) == answer


def test_continuations_refused_in_llama_servers_words(http: httpx.Client) -> None:
    two = [*PREFILLED, {"role": "assistant", "content": "there"}]
    r = http.post("/v1/chat/completions", json={**GREEDY, "messages": two})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == (
        "Cannot have 2 or more assistant messages at the end of the list.")
    # the tiny model's template has no thinking block to continue in
    r = http.post("/v1/chat/completions", json={
        **GREEDY, "messages": PREFILLED, "continue_final_message": "reasoning_content",
        "add_generation_prompt": False})
    assert r.status_code == 400 and "thinking block" in r.json()["error"]["message"]


def test_usage_of_n_choices_counts_the_prompt_once(http: httpx.Client) -> None:
    one = http.post("/v1/chat/completions", json={**GREEDY, "messages": [USER]}).json()
    two = http.post("/v1/chat/completions",
                    json={**GREEDY, "messages": [USER], "n": 2}).json()
    assert len(two["choices"]) == 2
    assert two["usage"]["prompt_tokens"] == one["usage"]["prompt_tokens"]
    assert two["usage"]["completion_tokens"] == 2 * one["usage"]["completion_tokens"]
    assert two["usage"]["total_tokens"] == (two["usage"]["prompt_tokens"]
                                            + two["usage"]["completion_tokens"])


def test_usage_of_n_completions_of_two_prompts(http: httpx.Client) -> None:
    prompts = ["The capital of France is", "Hi"]

    def usage(body: dict[str, Any]) -> dict[str, Any]:
        r = http.post("/v1/completions", json={**GREEDY, **body})
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()["usage"]
        return out

    singles = [usage({"prompt": p}) for p in prompts]
    both = usage({"prompt": prompts, "n": 2})
    assert both["prompt_tokens"] == sum(u["prompt_tokens"] for u in singles)
    assert both["completion_tokens"] == 2 * sum(u["completion_tokens"] for u in singles)


def test_a_stream_of_n_choices_sends_one_usage_after_the_last(http: httpx.Client) -> None:
    whole = http.post("/v1/chat/completions",
                      json={**GREEDY, "messages": [USER], "n": 2}).json()["usage"]
    r = http.post("/v1/chat/completions", json={
        **GREEDY, "messages": [USER], "n": 2, "stream": True,
        "stream_options": {"include_usage": True}})
    assert r.status_code == 200, r.text
    events = [json.loads(d) for d in sse_events(r.text) if d != "[DONE]"]
    with_usage = [i for i, e in enumerate(events) if "usage" in e]
    assert with_usage == [len(events) - 1]  # one, the last, after both finish_reasons
    assert sum(1 for e in events for c in e["choices"] if c["finish_reason"]) == 2
    assert events[-1]["choices"] == []
    streamed = events[-1]["usage"]
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert streamed[key] == whole[key], key
