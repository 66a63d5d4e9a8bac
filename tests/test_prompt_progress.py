"""return_progress and n_discard over real gRPC and the REST bridge.

return_progress: with `stream`, the first message is the 0% `prompt_progress` (processed =
cache), then one message with no content follows each decode of a prompt chunk (--batch-size 16
here), the last at processed = total, before any content; not without `stream`, nor without
the flag. n_discard: a negative value is refused (400; CVE-2026-21869 in llama-server), and a
context shift drops exactly the request's n_discard tokens (clamped to all but one of those
after n_keep), which the server's log line of each shift states.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_harness import chat_request, complete
from test_metrics import Server, start

BATCH = 16
CTX = 256  # one slot of 256 positions (llama.cpp pads -c to 256): a long generation shifts
PROMPT = "one two three four five six seven eight nine ten " * 4
_SHIFT = re.compile(r"context shift, kept (\d+), discarded (\d+)")


@pytest.fixture(scope="module")
def server(tiny_bpe_path: Path) -> Iterator[Server]:
    s = start(tiny_bpe_path, "--context-shift", "-b", str(BATCH), "-ub", str(BATCH),
              parallel=1, ctx=CTX)
    yield s
    s.svc.stop()


def progress_of(messages: list[Any]) -> list[Any]:
    return [m.prompt_progress for m in messages if m.HasField("prompt_progress")]


def test_progress_messages_over_grpc(server: Server) -> None:
    r = complete(server.stub, prompt=PROMPT, n_predict=3, temperature=0.0, cache_prompt=False,
                 return_progress=True)
    assert r.code == grpc.StatusCode.OK, r.details
    total = r.final.tokens_evaluated
    assert total > 2 * BATCH  # several chunks
    progress = progress_of(r.messages)
    assert len(progress) == 1 + math.ceil(total / BATCH)
    assert r.messages[0].HasField("prompt_progress")  # the first message is the 0% one
    assert (progress[0].total, progress[0].cache, progress[0].processed) == (total, 0, 0)
    processed = [p.processed for p in progress]
    assert processed == sorted(set(processed)) and processed[-1] == total
    assert all(b - a <= BATCH for a, b in pairwise(processed))
    assert all(p.total == total and p.cache == 0 for p in progress)
    times = [p.time_ms for p in progress]
    assert times == sorted(times) and times[0] == 0
    n_progress = len(progress)
    assert all(not m.content and not m.tokens for m in r.messages[:n_progress])
    assert not any(m.HasField("prompt_progress") for m in r.messages[n_progress:])


def test_progress_counts_the_cached_prompt(server: Server) -> None:
    first = complete(server.stub, prompt=PROMPT, n_predict=1, temperature=0.0)
    again = complete(server.stub, prompt=PROMPT, n_predict=1, temperature=0.0,
                     return_progress=True)
    assert first.code == again.code == grpc.StatusCode.OK
    progress = progress_of(again.messages)
    cached = again.final.timings.cache_n  # prompt tokens reused, not decoded
    assert cached > 0
    assert (progress[0].cache, progress[0].processed) == (cached, cached)
    assert progress[-1].processed == progress[-1].total == again.final.tokens_evaluated


def test_no_progress_unless_asked_and_streaming(server: Server) -> None:
    plain = complete(server.stub, prompt=PROMPT, n_predict=2, temperature=0.0)
    whole = complete(server.stub, prompt=PROMPT, n_predict=2, temperature=0.0,
                     return_progress=True, stream=False)
    assert plain.code == whole.code == grpc.StatusCode.OK
    assert not progress_of(plain.messages) and not progress_of(whole.messages)
    assert len(whole.messages) == 1


def test_progress_on_chat_over_grpc(server: Server) -> None:
    call = server.stub.ChatCompletion(chat_request(
        messages=[{"role": "user", "content": PROMPT}], max_tokens=2, temperature=0.0,
        return_progress=True, cache_prompt=False), timeout=60)
    messages = list(call)
    with_progress = [m for m in messages if m.HasField("prompt_progress")]
    assert len(with_progress) >= 2
    assert all(m.choices[0].delta.role == "assistant" for m in with_progress)
    assert with_progress[-1].prompt_progress.processed == with_progress[-1].prompt_progress.total


def _sse(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in text.splitlines()
            if line.startswith("data: ") and line != "data: [DONE]"]


def test_progress_through_the_bridge(server: Server) -> None:
    r = httpx.post(server.url + "/completion", timeout=60, json={
        "prompt": PROMPT, "n_predict": 2, "stream": True, "return_progress": True,
        "cache_prompt": False, "temperature": 0.0})
    assert r.status_code == 200, r.text
    events = [e for e in _sse(r.text) if "prompt_progress" in e]
    assert len(events) >= 2
    last = events[-1]["prompt_progress"]
    assert set(last) == {"total", "cache", "processed", "time_ms"}
    assert last["processed"] == last["total"] and isinstance(last["time_ms"], int)
    assert events[0]["content"] == ""


@pytest.mark.parametrize("path", ["/completion", "/v1/chat/completions"])
def test_negative_n_discard_is_refused(server: Server, path: str) -> None:
    body: dict[str, Any] = {"n_discard": -5, "n_predict": 2}
    body.update({"prompt": "x"} if path == "/completion"
                else {"messages": [{"role": "user", "content": "x"}]})
    r = httpx.post(server.url + path, json=body, timeout=60)
    assert r.status_code == 400
    assert "n_discard" in r.json()["error"]["message"]
    grpc_r = complete(server.stub, prompt="x", n_discard=-1, n_predict=2)
    assert grpc_r.code == grpc.StatusCode.INVALID_ARGUMENT and "n_discard" in grpc_r.details
    assert not grpc_r.messages


def _shifts(server: Server, **fields: Any) -> tuple[Any, list[tuple[int, int]]]:
    mark = len(server.svc.log())
    r = complete(server.stub, prompt="shift", n_predict=CTX + 40, ignore_eos=True,
                 temperature=0.0, cache_prompt=False, **fields)
    assert r.code == grpc.StatusCode.OK, r.details
    return r, [(int(k), int(d)) for k, d in _SHIFT.findall(server.svc.log()[mark:])]


def test_a_context_shift_drops_n_discard_tokens(server: Server) -> None:
    r, shifts = _shifts(server, n_discard=10)
    assert r.final.truncated
    assert len(shifts) >= 4  # 296 positions in 256, 10 at a time
    assert all(d == 10 for _, d in shifts), shifts
    assert len(r.tokens) == CTX + 40


def test_default_and_oversized_n_discard(server: Server) -> None:
    # A shift happens when the next token would take the last cell (n_past = CTX - 1), as
    # llama-server's: half of what follows n_keep, or the request's, never all of it.
    n_past = CTX - 1
    _, half = _shifts(server)
    assert half and all(d == (n_past - k) // 2 for k, d in half), half
    _, clamped = _shifts(server, n_discard=100000)
    assert clamped and all(d == n_past - k - 1 for k, d in clamped), clamped
