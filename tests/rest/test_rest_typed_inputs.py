"""Typed inputs and enum companions (issue 25, items 3 and 6) through the real REST bridge:
llama-server's JSON keeps working and gets llama-server's JSON back (no enum companions in
it), and the typed fields may be sent as JSON keys too."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from rest_harness import sse_events

BASE: dict[str, Any] = {"prompt": "The quick brown fox", "n_predict": 24, "temperature": 0,
                        "cache_prompt": False, "repeat_penalty": 1.0}
CHAT: dict[str, Any] = {"messages": [{"role": "user", "content": "Hi"}], "n_predict": 4,
                        "temperature": 0}


def _no_companions(text: str) -> None:
    for key in ("typed_", "FINISH_REASON_", "STOP_TYPE_", "ROLE_"):
        assert key not in text


def test_stop_sequences_as_a_json_key_stop_like_stop(http: httpx.Client) -> None:
    free = http.post("/completion", json=BASE).json()["content"]
    word = free[6:9]
    by_stop = http.post("/completion", json={**BASE, "stop": [word]})
    typed = http.post("/completion", json={**BASE, "stop_sequences": [word]})
    assert by_stop.status_code == typed.status_code == 200
    assert typed.json()["content"] == by_stop.json()["content"] == free[:free.index(word)]
    assert typed.json()["stop_type"] == "word" and typed.json()["stopping_word"] == word
    _no_companions(typed.text)


def test_both_stop_forms_are_a_400(http: httpx.Client) -> None:
    response = http.post("/completion", json={**BASE, "stop": ["a"], "stop_sequences": ["b"]})
    assert response.status_code == 400
    assert "stop_sequences" in response.json()["error"]["message"]


def test_llama_server_logit_bias_and_typed_one_agree(http: httpx.Client) -> None:
    pairs = http.post("/completion", json={**BASE, "logit_bias": [[1000, 100.0]]}).json()
    typed = http.post("/completion", json={
        **BASE, "typed_logit_bias": [{"token": 1000, "bias": 100.0}]}).json()
    assert typed["content"] == pairs["content"]
    assert typed["generation_settings"]["logit_bias"] \
        == pairs["generation_settings"]["logit_bias"] == [{"token": 1000, "bias": 100.0}]


@pytest.mark.parametrize("stream", [False, True])
def test_chat_json_has_the_strings_and_no_enums(http: httpx.Client, stream: bool) -> None:
    response = http.post("/v1/chat/completions", json={**CHAT, "stream": stream})
    assert response.status_code == 200
    _no_companions(response.text)
    if stream:
        events = [json.loads(e) for e in sse_events(response.text) if e != "[DONE]"]
        assert events[0]["choices"][0]["delta"]["role"] == "assistant"
        assert events[-1]["choices"][0]["finish_reason"] == "length"
    else:
        choice = response.json()["choices"][0]
        assert choice["message"]["role"] == "assistant" and choice["finish_reason"] == "length"


def test_openai_completion_json_has_no_enums(http: httpx.Client) -> None:
    response = http.post("/v1/completions", json={**BASE, "n_predict": 3})
    assert response.status_code == 200
    assert response.json()["choices"][0]["finish_reason"] == "length"
    _no_companions(response.text)


def test_tools_with_parameters_json_render_integers(http: httpx.Client) -> None:
    schema = '{"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}}'
    tool = {"type": "function", "function": {"name": "f", "parameters_json": schema}}
    response = http.post("/apply-template", json={**CHAT, "tools": [tool]})
    assert response.status_code == 200
    prompt = response.json()["prompt"]
    assert '"minimum": 1' in prompt and '"minimum": 1.0' not in prompt


def test_bad_tool_choice_is_a_400(http: httpx.Client) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    response = http.post("/v1/chat/completions",
                         json={**CHAT, "tools": [tool], "tool_choice": "sometimes"})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Invalid tool_choice: sometimes"
