"""`n` / `n_cmpl` choices (issue 18, item 4): the scheduler decodes a prompt once and copies
its cells to the other choices' sequences (plain data structure); then the real service through
gRPC (Completion with n_cmpl, OpenAICompletion and ChatCompletion with n), the REST bridge and
the openai SDK: an index per choice, streamed interleaved, greedy choices identical, seeded ones
reproducible, usage counting every choice, and n out of range refused before any message."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
import pytest
from grpc_harness import chat_request, completion_request
from llama.v1 import service_pb2_grpc
from rest.rest_harness import RestServer, serving, sse_events
from scheduler_harness import Runner, make_scheduler, request, work_of

N_SLOTS = 4
MESSAGES: list[Any] = [{"role": "user", "content": "Say something."}]


# -- the scheduler -----------------------------------------------------------------------------
def test_other_choices_copy_the_prompt_cells_and_decode_only_its_last_token() -> None:
    run = Runner(make_scheduler(3, n_batch=8))
    first = request("c0", 20, n_predict=2)
    others = [request(f"c{j}", list(first.prompt), n_predict=2) for j in (1, 2)]
    for r in others:
        r.copy_of = first
    run.add(first, *others)
    plans = run.steps(3)
    # The first choice's prompt goes in chunks; the others wait, taking no budget.
    assert all(not work_of(p, r) for p in plans[:2] for r in others)
    assert [sum(len(w.tokens) for w in work_of(p, first)) for p in plans] == [8, 8, 4]
    assert plans[2].copies == ()  # its last chunk is still being decoded
    plan = run.step()
    assert sorted(plan.copies) == [(first.slot.id, r.slot.id, 19) for r in others]  # type: ignore[union-attr]
    for r in others:
        [w] = work_of(plan, r)
        assert (w.pos, list(w.tokens), w.n_outputs) == (19, [first.prompt[19]], 1)
        assert r.n_cached == 19 and r.copy_of is None


def test_a_choice_whose_sibling_is_gone_decodes_its_prompt_itself() -> None:
    run = Runner(make_scheduler(2, n_batch=64))
    first = request("c0", 10, n_predict=1)
    other = request("c1", list(first.prompt), n_predict=1)
    other.copy_of = first
    run.add(first, other)
    first.cancelled = True
    plan = run.step()
    assert plan.copies == ()
    [w] = work_of(plan, other)
    assert (w.pos, len(w.tokens)) == (0, 10)


# -- the service ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tiny_bpe_path: Path) -> Iterator[RestServer]:
    with serving(RestServer(tiny_bpe_path, ctx=4096, parallel=N_SLOTS)) as srv:
        yield srv


@pytest.fixture(scope="module")
def stub(server: RestServer) -> Iterator[Any]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield service_pb2_grpc.LlamaServerStub(channel)


def _by_index(msgs: list[Any], text: Any) -> dict[int, str]:
    out: dict[int, str] = {}
    for m in msgs:
        for i, t in text(m):
            out[i] = out.get(i, "") + t
    return out


def _chat(stub: Any, stream: bool, **fields: Any) -> tuple[dict[int, str], list[Any]]:
    msgs = list(stub.ChatCompletion(chat_request(messages=MESSAGES, n_predict=10, stream=stream,
                                                 **fields), timeout=120))
    texts = _by_index(msgs, lambda m: [
        (c.index, c.delta.content if stream else c.message.content) for c in m.choices])
    return texts, msgs


@pytest.mark.slow
@pytest.mark.parametrize("stream", [False, True])
def test_chat_n3_over_grpc(stub: Any, stream: bool) -> None:
    greedy, msgs = _chat(stub, stream, n=3, temperature=0)
    assert sorted(greedy) == [0, 1, 2]
    assert len(set(greedy.values())) == 1  # greedy: the same answer three times
    finals = [m for m in msgs if m.choices and m.choices[0].finish_reason]
    assert sorted(m.choices[0].index for m in finals) == [0, 1, 2]
    # Decoded once: each other choice evaluated only the prompt's last token.
    assert sorted(m.timings.prompt_n for m in finals)[:2] == [1, 1]
    seeded, _ = _chat(stub, stream, n=3, temperature=1.0, seed=7)
    again, _ = _chat(stub, stream, n=3, temperature=1.0, seed=7)
    assert seeded == again and len(set(seeded.values())) > 1


@pytest.mark.slow
def test_choices_with_a_grammar_each_have_their_own_seed(stub: Any) -> None:
    # A grammar's chains are built before queueing, one per choice: each from its choice's
    # parameters, so choice j samples as a lone request seeded seed + j would.
    grammar = 'root ::= [a-z ]+'
    choices, _ = _chat(stub, False, n=2, temperature=1.0, seed=11, grammar=grammar)
    for j in (0, 1):
        alone, _ = _chat(stub, False, n=1, temperature=1.0, seed=11 + j, grammar=grammar)
        assert choices[j] == alone[0]
    assert choices[0] != choices[1]


@pytest.mark.slow
def test_completion_n_cmpl_and_openai_n_over_grpc(stub: Any) -> None:
    req = completion_request(prompt=["Hello", "Bye"], n_cmpl=2, n_predict=6, temperature=0,
                             stream=False)
    msgs = list(stub.Completion(req, timeout=120))
    assert sorted(m.index for m in msgs) == [0, 1, 2, 3]
    text = {m.index: m.content for m in msgs}
    assert text[0] == text[1] and text[2] == text[3]
    req = completion_request(prompt="Hello", n=3, n_predict=6, temperature=0, stream=True)
    chunks = list(stub.OpenAICompletion(req, timeout=120))
    texts = _by_index(chunks, lambda m: [(c.index, c.text) for c in m.choices])
    assert sorted(texts) == [0, 1, 2] and len(set(texts.values())) == 1


@pytest.mark.parametrize("n", [0, -1, N_SLOTS + 1, 1 << 30])
def test_n_out_of_range_is_invalid_argument(stub: Any, n: int) -> None:
    with pytest.raises(grpc.RpcError) as err:
        list(stub.ChatCompletion(chat_request(messages=MESSAGES, n=n), timeout=60))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"between 1 and {N_SLOTS}" in str(err.value.details())
    with pytest.raises(grpc.RpcError) as err:
        list(stub.Completion(completion_request(prompt="x", n_cmpl=n), timeout=60))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.slow
def test_bridge_and_openai_sdk(server: RestServer) -> None:
    body = {"messages": MESSAGES, "n": 3, "max_tokens": 8, "temperature": 0}
    with httpx.Client(base_url=server.url, timeout=120) as http:
        r = http.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        out = r.json()
        assert [c["index"] for c in out["choices"]] == [0, 1, 2]
        assert out["usage"]["completion_tokens"] == 3 * 8
        r = http.post("/v1/chat/completions", json={**body, "stream": True})
        events = [json.loads(e) for e in sse_events(r.text) if e != "[DONE]"]
        assert {c["index"] for e in events for c in e["choices"]} == {0, 1, 2}
        roles = [c["index"] for e in events for c in e["choices"] if "role" in c["delta"]]
        assert sorted(roles) == [0, 1, 2]  # each choice's first delta has the role
        r = http.post("/v1/chat/completions", json={**body, "n": 99})
        assert r.status_code == 400 and "between 1 and" in r.text
    with openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0,
                       timeout=120.0) as client:
        whole = client.chat.completions.create(model="m", messages=MESSAGES, n=3, max_tokens=8,
                                               temperature=0)
        streamed: dict[int, str] = {}
        for chunk in client.chat.completions.create(model="m", messages=MESSAGES, n=3,
                                                    max_tokens=8, temperature=0, stream=True):
            for c in chunk.choices:
                streamed[c.index] = streamed.get(c.index, "") + (c.delta.content or "")
    assert [c.message.content for c in whole.choices] == [streamed[i] for i in range(3)]
    assert len(whole.choices) == 3
