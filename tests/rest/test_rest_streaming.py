"""Streaming under real conditions: a client that disconnects frees its slot (streaming or
not), and 16 concurrent SSE clients each get their own, correct output."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from rest_harness import RestServer, sse_events

pytestmark = pytest.mark.slow

ENDLESS = {"prompt": "Count forever:", "n_predict": -1, "ignore_eos": True, "temperature": 0}


def wait_not_running(url: str, gen_id: str, timeout: float = 15.0) -> None:
    """Until POST /cancel no longer finds the generation (it ended or was cancelled)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.post(url + "/cancel", json={"id": gen_id}, timeout=10)
        assert r.status_code == 200, r.text
        if r.json() == {"found": False}:
            return
        time.sleep(0.1)
    raise AssertionError(f"generation {gen_id} still runs {timeout}s after the disconnect")


def assert_slot_idle(url: str, slot: int) -> None:
    # A request pinned to a busy slot waits for it; an endless generation would never let go.
    r = httpx.post(url + "/completion", timeout=30,
                   json={"prompt": "Hi", "n_predict": 3, "id_slot": slot, "temperature": 0})
    assert r.status_code == 200, r.text
    assert r.json()["id_slot"] == slot and r.json()["tokens_predicted"] == 3


def test_disconnect_mid_stream_frees_the_slot(rest_server: RestServer) -> None:
    url = rest_server.url
    gen_id = None
    with httpx.Client(timeout=30) as client, client.stream(
            "POST", url + "/completion", json={**ENDLESS, "id_slot": 0, "stream": True}) as r:
        assert r.status_code == 200
        gen_id = r.headers["x-request-id"]  # the native events have no id key (llama-server's)
        n = 0
        for line in r.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                assert event["stop"] is False
                n += 1
                if n == 5:
                    break  # leaving the block closes the connection mid-stream
    assert gen_id is not None
    wait_not_running(url, gen_id)
    assert_slot_idle(url, 0)


def test_disconnect_while_waiting_for_a_non_streamed_answer_frees_the_slot(
        rest_server: RestServer) -> None:
    url = rest_server.url
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url + "/completion", json={**ENDLESS, "id_slot": 1}, timeout=1.5)
    assert_slot_idle(url, 1)


async def _stream_one(client: httpx.AsyncClient, i: int) -> tuple[str, list[int], set[str]]:
    body = {"prompt": f"Story number {i}: once", "n_predict": 12, "temperature": 0,
            "seed": 1000 + i, "cache_prompt": False, "stream": True}
    r = await client.post("/completion", json=body)
    assert r.status_code == 200, r.text
    objs = [json.loads(e) for e in sse_events(r.text)]
    assert objs[-1]["stop"] is True and all(not o["stop"] for o in objs[:-1])
    text = "".join(o["content"] for o in objs)
    tokens = [t for o in objs[:-1] for t in o["tokens"]]
    return text, tokens, {r.headers["x-request-id"]}


async def _run(url: str, indices: list[int], concurrent: bool) -> list[tuple[str, list[int],
                                                                           set[str]]]:
    async with httpx.AsyncClient(base_url=url, timeout=120,
                                 limits=httpx.Limits(max_connections=32)) as client:
        if concurrent:
            return list(await asyncio.gather(*(_stream_one(client, i) for i in indices)))
        return [await _stream_one(client, i) for i in indices]


def test_16_concurrent_sse_clients_get_their_own_outputs(rest_server: RestServer) -> None:
    indices = list(range(16))
    sequential = asyncio.run(_run(rest_server.url, indices, concurrent=False))
    concurrent = asyncio.run(_run(rest_server.url, indices, concurrent=True))
    ids = set()
    for i, ((seq_text, seq_tokens, _), (text, tokens, gen_ids)) in enumerate(
            zip(sequential, concurrent, strict=True)):
        ids |= gen_ids
        assert tokens == seq_tokens, f"client {i}: concurrent output differs from sequential"
        assert text == seq_text
    assert len(ids) == 16
    assert len({text for text, _, _ in concurrent}) > 1  # the outputs really are separate


def test_streamed_messages_count_the_tokens_so_far(rest_server: RestServer) -> None:
    # As llama-server: every partial message carries the tokens generated so far and the
    # prompt's tokens, not zeros.
    body = {"prompt": [1, 2, 3], "n_predict": 3, "ignore_eos": True, "temperature": 0.0,
            "stream": True, "cache_prompt": False}
    r = httpx.post(rest_server.url + "/completion", json=body, timeout=60)
    events = [json.loads(e) for e in sse_events(r.text)]
    partials = [e for e in events if not e["stop"]]
    final = events[-1]
    assert [e["tokens_predicted"] for e in partials] == list(range(1, len(partials) + 1))
    assert final["tokens_predicted"] == 3 == sum(len(e["tokens"]) for e in partials)
    assert {e["tokens_evaluated"] for e in partials} == {final["tokens_evaluated"]} == {3}
