"""The thinking budget (issue 18): `--reasoning-budget N` and `--reasoning-budget-message`, as
the pinned llama.cpp's reasoning-budget sampler. The machine's rules on made-up token ids (pure
logic), then end to end on the real service with the DeepSeek R1 Distill template (its prompt
opens `<think>`) on the random tiny-bpe model, greedy: the answer's first N tokens are the
unlimited answer's, then the message and `</think>` are forced token by token and the answer
goes on as content; over gRPC and through the REST bridge, streamed and whole."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_harness import chat_request, completion_request
from llama.v1 import chat_pb2, tokenize_pb2
from reasoning_harness import llama_stub, r1_server
from rest.rest_harness import RestServer, sse_events

from service.reasoning_budget import COUNTING, DONE, FORCING, IDLE, BudgetSpec, budget_spec
from service.rpc_chat_control import NO_COMPLETION, NOT_ARMED

START, END, MSG = (1, 2), (3,), (7, 8)


def _spec(budget: int, opened: bool = False, piece: Any = None) -> BudgetSpec:
    words = {"<think>": START, "</think>": END, "!": MSG}
    spec = budget_spec(lambda s: words[s], piece or (lambda t: b"x"), ("<think>", "</think>"),
                       opened, budget, "!", control=False)
    assert spec is not None
    return spec


def _run(spec: BudgetSpec, sampled: list[int]) -> list[int]:
    """The answer's tokens when the model would sample `sampled` in turn."""
    state, it = spec.state(), iter(sampled)
    out: list[int] = []
    while len(out) < 12:
        token = state.forced()
        if token is None:
            token = next(it, None)
            if token is None:
                break
        state.accept(token)
        out.append(token)
    return out


def test_budget_counts_from_the_start_tag_then_forces_message_and_end() -> None:
    assert _run(_spec(2), [5, 1, 2, 9, 9, 9, 6]) == [5, 1, 2, 9, 9, 7, 8, 3, 9, 6]


def test_opened_block_counts_from_the_first_token_and_zero_forces_at_once() -> None:
    assert _run(_spec(1, opened=True), [9, 9, 6]) == [9, 7, 8, 3, 9, 6]
    assert _run(_spec(0, opened=True), [9, 6]) == [7, 8, 3, 9, 6]


def test_natural_end_stops_the_count_and_a_new_block_gets_a_fresh_budget() -> None:
    assert _run(_spec(3, opened=True), [9, 3, 9, 9, 9, 1, 2, 9, 9, 9, 9]) == \
        [9, 3, 9, 9, 9, 1, 2, 9, 9, 9, 7, 8]


def test_waits_for_a_whole_utf8_character() -> None:
    pieces = {9: b"\xe2", 10: b"\x82\xac", 6: b"x"}
    spec = _spec(1, opened=True, piece=lambda t: pieces[t])
    assert _run(spec, [9, 10, 6, 6]) == [9, 10, 6, 7, 8, 3, 6]


def test_request_end_forces_only_a_counted_block() -> None:
    spec = budget_spec(lambda s: {"<think>": START, "</think>": END}[s], lambda t: b"x",
                       ("<think>", "</think>"), False, -1, None, control=True)
    assert spec is not None and spec.forced == END
    state = spec.state()
    state.request_end()
    assert state.forced() is None and state.state == IDLE  # not thinking: nothing to end
    for t in START:
        state.accept(t)
    assert state.state == COUNTING
    state.request_end()
    assert state.forced() == 3 and state.state == FORCING
    state.accept(3)
    assert state.state == DONE and state.forced() is None


def test_nothing_to_limit() -> None:
    assert budget_spec(lambda s: [1], lambda t: b"", ("a", "b"), True, -1, None, False) is None


# -- end to end ------------------------------------------------------------------------------
BUDGET, MESSAGE = 6, " Enough thinking."
MESSAGES: list[Any] = [{"role": "user", "content": "Why is the sky blue?"}]


@pytest.fixture(scope="module")
def server(tiny_bpe_path: Path) -> Iterator[RestServer]:
    with r1_server(tiny_bpe_path, "--reasoning-budget", str(BUDGET),
                   "--reasoning-budget-message", MESSAGE) as srv:
        yield srv


@pytest.fixture(scope="module")
def stub(server: RestServer) -> Iterator[Any]:
    with llama_stub(server) as stub:
        yield stub


def _tokens(stub: Any, text: str) -> list[int]:
    out = stub.Tokenize(tokenize_pb2.TokenizeRequest(content=text, parse_special=True))
    return list(out.tokens)


def _chat(stub: Any, **fields: Any) -> Any:
    [msg] = stub.ChatCompletion(chat_request(messages=MESSAGES, stream=False, temperature=0,
                                             n_predict=BUDGET + 16, return_tokens=True,
                                             **fields), timeout=60)
    return msg.choices[0]


@pytest.mark.slow
def test_budget_forces_the_end_of_thinking(stub: Any) -> None:
    prompt = stub.ApplyTemplate(chat_request(messages=MESSAGES)).prompt
    [free] = stub.Completion(completion_request(prompt=prompt, stream=False, temperature=0,
                                                n_predict=BUDGET, return_tokens=True),
                             timeout=60)
    forced = _tokens(stub, MESSAGE) + _tokens(stub, "</think>")  # each tokenized alone
    raw = _chat(stub, reasoning_format="none")
    tokens = list(raw.tokens)
    assert tokens[:BUDGET] == list(free.tokens)  # the budget's tokens are the model's own
    # then the message and the end tag (a few tokens later if a character was cut)
    at = next(i for i in range(BUDGET, BUDGET + 4) if tokens[i:i + len(forced)] == forced)
    assert len(tokens) > at + len(forced)  # and the answer goes on
    # unsplit, the block the prompt opened is content (as llama-server parses the prompt's end)
    assert raw.message.content.startswith("<think>\n" + free.content)
    assert MESSAGE + "</think>" in raw.message.content
    parsed = _chat(stub)
    assert list(parsed.tokens) == tokens
    assert parsed.message.reasoning_content.endswith(MESSAGE.strip())
    answer = raw.message.content.split("</think>", 1)[1]
    assert parsed.message.content == answer.lstrip() and parsed.message.content


@pytest.mark.slow
def test_budget_streams_through_the_bridge(server: RestServer, stub: Any) -> None:
    whole = _chat(stub).message
    body = {"messages": MESSAGES, "temperature": 0, "max_tokens": BUDGET + 16}
    with httpx.Client(base_url=server.url, timeout=60) as http:
        out = http.post("/v1/chat/completions", json=body).json()["choices"][0]["message"]
        assert out["reasoning_content"] == whole.reasoning_content
        assert out["content"] == whole.content
        r = http.post("/v1/chat/completions", json={**body, "stream": True})
        deltas = [c["delta"] for e in sse_events(r.text) if e != "[DONE]"
                  for c in json.loads(e)["choices"]]
    assert "".join(d.get("reasoning_content") or "" for d in deltas) == whole.reasoning_content
    assert "".join(d.get("content") or "" for d in deltas) == whole.content


@pytest.mark.slow
def test_a_grammar_rules_without_a_budget(stub: Any) -> None:
    """json_schema: the grammar decides the answer; no forced end tag breaks it."""
    choice = _chat(stub, reasoning_format="none", json_schema={"type": "string"})
    assert choice.message.content.startswith('"') and "</think>" not in choice.message.content


# -- reasoning_control: ControlChatCompletion ends the block at run time ----------------------
@pytest.fixture(scope="module")
def free_server(tiny_bpe_path: Path) -> Iterator[RestServer]:
    """No budget: the thinking block runs until something ends it."""
    with r1_server(tiny_bpe_path) as srv:
        yield srv


def _endless(stub: Any, **fields: Any) -> Any:
    """A streamed chat that only the context's end would stop (cancelled by the test)."""
    return stub.ChatCompletion(chat_request(messages=MESSAGES, temperature=0, n_predict=-1,
                                            **fields), timeout=120)


@pytest.mark.slow
def test_reasoning_end_moves_the_answer_on(free_server: RestServer) -> None:
    with llama_stub(free_server) as stub:
        call = _endless(stub, reasoning_control=True)
        first = next(m for m in call if any(c.delta.reasoning_content for c in m.choices))
        done = stub.ControlChatCompletion(chat_pb2.ControlChatCompletionRequest(
            id=first.id, action="reasoning_end"))
        assert done.success and not done.HasField("message")
        content = ""
        for msg in call:
            assert not msg.HasField("error")
            content += "".join(c.delta.content for c in msg.choices)
            if content:
                break
        call.cancel()
        assert content  # the block ended: the answer goes on as content


@pytest.mark.slow
def test_control_refusals(free_server: RestServer) -> None:
    with llama_stub(free_server) as stub:
        call = _endless(stub)  # not armed
        first = next(iter(call))
        out = stub.ControlChatCompletion(chat_pb2.ControlChatCompletionRequest(
            id=first.id, action="reasoning_end"))
        call.cancel()
        assert (out.success, out.message) == (False, NOT_ARMED)
        out = stub.ControlChatCompletion(chat_pb2.ControlChatCompletionRequest(
            id="chatcmpl-none", action="reasoning_end"))
        assert (out.success, out.message) == (False, NO_COMPLETION)
        for request, words in ((chat_pb2.ControlChatCompletionRequest(action="reasoning_end"),
                                "missing completion id"),
                               (chat_pb2.ControlChatCompletionRequest(id="x", action="stop"),
                                "unknown control action")):
            with pytest.raises(grpc.RpcError) as err:
                stub.ControlChatCompletion(request)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert words in str(err.value.details())
    with httpx.Client(base_url=free_server.url, timeout=60) as http:
        r = http.post("/v1/chat/completions/control",
                      json={"id": "chatcmpl-none", "action": "reasoning_end"})
        assert r.status_code == 200
        assert r.json() == {"success": False, "message": NO_COMPLETION}
        r = http.post("/v1/chat/completions/control", json={"id": "x", "action": "stop"})
        assert r.status_code == 400
        assert r.json()["error"]["message"] == "unknown control action"
