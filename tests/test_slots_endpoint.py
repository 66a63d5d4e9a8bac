"""GET /slots (ListSlots) over real gRPC and the REST bridge: every documented field with the
values in use while a request runs and after it ended, and `fail_on_no_slot` (UNAVAILABLE /
HTTP 503 while the only slot is busy, an answer once it is idle). `--no-slots` is in
tests/test_metrics.py with the other disabled endpoints."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_harness import chat_request, complete, completion_request
from llama.v1 import server_pb2
from test_metrics import Server, start, wait_until

# The pinned llama-server's keys (server_slot::to_json): a slot never used shows the first
# four only; `prompt` and `generated` need its LLAMA_SERVER_SLOTS_DEBUG.
NEVER_USED_KEYS = {"id", "n_ctx", "speculative", "is_processing"}
USED_KEYS = NEVER_USED_KEYS | {"id_task", "n_prompt_tokens", "n_prompt_tokens_processed",
                               "n_prompt_tokens_cache", "params", "next_token"}
NEXT_TOKEN_KEYS = {"has_next_token", "has_new_line", "n_remain", "n_decoded"}


@pytest.fixture(scope="module")
def server(tiny_bpe_path: Path) -> Iterator[Server]:
    s = start(tiny_bpe_path, "--context-shift", parallel=1)
    yield s
    s.svc.stop()


def slots(stub: Any, fail_on_no_slot: str = "") -> Any:
    return stub.ListSlots(server_pb2.ListSlotsRequest(fail_on_no_slot=fail_on_no_slot),
                          timeout=30).slots


def test_a_slot_never_used_shows_no_task(tiny_bpe_path: Path) -> None:
    s = start(tiny_bpe_path, parallel=2, ctx=512)
    try:
        for i, slot in enumerate(slots(s.stub)):
            assert (slot.id, slot.id_task, slot.n_ctx) == (i, -1, 256)
            assert not slot.is_processing and not slot.speculative and slot.prompt == ""
            assert not slot.HasField("params") and not slot.HasField("next_token")
        r = httpx.get(s.url + "/slots", timeout=30)
        assert r.status_code == 200
        assert r.json() == [{"id": i, "n_ctx": 256, "speculative": False,
                             "is_processing": False} for i in range(2)]
    finally:
        s.svc.stop()


def test_a_slot_holds_at_most_the_training_context(tiny_bpe_path: Path) -> None:
    # As llama-server's n_ctx_slot(): tiny-bpe was made with a 4,096-token context.
    s = start(tiny_bpe_path, parallel=1, ctx=8192)
    try:
        (slot,) = slots(s.stub)
        assert slot.n_ctx == 4096
        props = httpx.get(s.url + "/props", timeout=30).json()
        assert props["default_generation_settings"]["n_ctx"] == 4096
    finally:
        s.svc.stop()


def test_slot_fields_while_running_and_after(server: Server, open_stream: Any) -> None:
    prompt = "the slot shows this prompt"
    reader = open_stream(server.stub.Completion(completion_request(
        prompt=prompt, n_predict=-1, ignore_eos=True, temperature=0.0, top_k=7,
        n_discard=5)))
    first = reader.first()
    wait_until(lambda: slots(server.stub)[0].next_token.n_decoded >= 2, "tokens generated")
    (slot,) = slots(server.stub)
    assert slot.id == 0 and slot.is_processing and slot.id_task >= 0 and slot.n_ctx == 1024
    assert not slot.speculative
    assert slot.params.top_k == 7 and slot.params.temperature == 0
    assert slot.params.n_discard == 5 and slot.params.n_predict == -1
    assert slot.params.stream
    assert slot.prompt.endswith(prompt)
    assert slot.next_token.has_next_token and slot.next_token.n_remain == -1
    # n_prompt_tokens is what the cells hold: the prompt and, by now, tokens generated
    assert slot.n_prompt_tokens >= slot.n_prompt_tokens_processed + slot.n_prompt_tokens_cache
    assert slot.n_prompt_tokens_processed > 0
    assert first.id_slot == 0
    # The only slot is busy: a load balancer's probe is turned away.
    with pytest.raises(grpc.RpcError) as info:
        slots(server.stub, fail_on_no_slot="1")
    err: Any = info.value
    assert err.code() == grpc.StatusCode.UNAVAILABLE and err.details() == "no slot available"
    r = httpx.get(server.url + "/slots", params={"fail_on_no_slot": "1"}, timeout=30)
    assert r.status_code == 503 and r.json()["error"]["type"] == "unavailable_error"

    reader.cancel()
    wait_until(lambda: not slots(server.stub)[0].is_processing, "the slot is idle")
    (after,) = slots(server.stub)
    assert after.id_task == slot.id_task  # the last request it ran
    assert after.params.top_k == 7 and after.prompt == slot.prompt
    # llama-server resets a freed slot's counts: only its cells remain
    assert not after.next_token.has_next_token and not after.next_token.has_new_line
    assert (after.next_token.n_decoded, after.next_token.n_remain) == (0, -1)
    assert (after.n_prompt_tokens_processed, after.n_prompt_tokens_cache) == (0, 0)
    assert len(slots(server.stub, fail_on_no_slot="1")) == 1  # idle: answered


def test_a_finished_request_leaves_its_settings_and_cells(server: Server) -> None:
    before = slots(server.stub)[0].id_task
    r = complete(server.stub, prompt="count to five", n_predict=5, ignore_eos=True,
                 temperature=0.0, stream=False)
    assert r.code == grpc.StatusCode.OK, r.details
    (slot,) = slots(server.stub)
    assert slot.id_task > before
    assert not slot.is_processing and not slot.params.stream and slot.params.n_predict == 5
    assert slot.next_token.n_decoded == 0 and slot.next_token.n_remain == -1
    # the cells: the prompt and every generated token but the last (never decoded)
    assert slot.n_prompt_tokens == r.final.tokens_cached == r.final.tokens_evaluated + 4


def test_a_chat_request_echoes_its_parser_format_and_generation_prompt(server: Server) -> None:
    # As llama-server's settings echo: a chat request (Jinja) is parsed by a PEG parser, and
    # starts after the template's generation prompt; a plain completion is content only.
    messages = [{"role": "user", "content": "hi"}]
    list(server.stub.ChatCompletion(chat_request(messages=messages, max_tokens=2,
                                                 stream=False), timeout=60))
    (slot,) = slots(server.stub)
    rendered = server.stub.ApplyTemplate(chat_request(messages=messages), timeout=30).prompt
    assert slot.params.chat_format == "peg-native"
    assert slot.params.generation_prompt and rendered.endswith(slot.params.generation_prompt)
    r = complete(server.stub, prompt="plain", n_predict=2, stream=False)
    assert r.code == grpc.StatusCode.OK, r.details
    (slot,) = slots(server.stub)
    assert (slot.params.chat_format, slot.params.generation_prompt) == ("Content-only", "")


def test_slots_over_rest_is_the_spec_array(server: Server) -> None:
    r = httpx.get(server.url + "/slots", timeout=30)
    assert r.status_code == 200
    body = r.json()
    assert isinstance(body, list) and len(body) == 1
    slot = body[0]
    assert set(slot) == USED_KEYS
    assert isinstance(slot["next_token"], list) and len(slot["next_token"]) == 1
    assert set(slot["next_token"][0]) == NEXT_TOKEN_KEYS
    assert slot["params"].keys() >= {"n_predict", "temperature", "n_keep", "n_discard",
                                     "samplers"}
    assert isinstance(slot["id_task"], int) and slot["n_ctx"] == 1024
