"""Cache reuse by KV shifting (n_cache_reuse, --cache-reuse): the moves computed (pure logic,
as llama-server's loop) and, on the real service, a prompt that drops the middle of a cached
one reusing what follows (timings.cache_n), only with a long enough run, only when asked.

A moved run keeps the attention it was computed with (its cells saw the dropped part), so its
output is not the output of evaluating the new prompt afresh: llama-server's reuse is the same
approximation. The test checks what is reused and that reuse is deterministic."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_harness import EXACT, CompletionResult, complete, running_service

from service.engine.cache_reuse import reuse_chunks

_rnd = random.Random(7)
A = [_rnd.randrange(1000, 50000) for _ in range(40)]
B = [_rnd.randrange(1000, 50000) for _ in range(30)]
C = [_rnd.randrange(1000, 50000) for _ in range(60)]
TAIL = [777, 888]


def test_the_moves_follow_llama_servers_scan() -> None:
    cache = [*A, *B, *C]
    shifts, n_past = reuse_chunks(cache, [*A, *C, *TAIL], len(A), 8)
    assert shifts == ((40, 70, 60),) and n_past == 100
    # A run shorter than the minimum is not moved; nothing after it is looked at twice.
    assert reuse_chunks(cache, [*A, *C, *TAIL], len(A), 61) == ((), 40)
    assert reuse_chunks(cache, [*A, *C, *TAIL], len(A), 0) == ((), 40)
    # The prompt's last token is never reused: its logits must be computed.
    shifts, n_past = reuse_chunks(cache, [*A, *C], len(A), 8)
    assert shifts == ((40, 70, 59),) and n_past == 99
    # Two runs, each moved back in order.
    cache = [1, 2, 3, 9, 9, 4, 5, 6, 9, 7, 8, 0]
    assert reuse_chunks(cache, [1, 4, 5, 6, 7, 8, 0, 42], 1, 2) == (
        ((1, 5, 3), (4, 9, 3)), 7)


@pytest.fixture(scope="module")
def stub(tiny_bpe_path: Path) -> Iterator[Any]:
    """One slot, so every request lands on the cache the previous one left."""
    with running_service(tiny_bpe_path, "--cache-reuse", "8", ctx=1024, parallel=1) as svc:
        yield svc.stub()


def _run(stub: Any, prompt: list[int], n: int = 3, **fields: Any) -> CompletionResult:
    r = complete(stub, prompt=prompt, n_predict=n, **{**EXACT, "cache_prompt": True, **fields})
    assert r.code == grpc.StatusCode.OK, r.details
    return r


def _reuse(stub: Any, **fields: Any) -> CompletionResult:
    _run(stub, [*A, *B, *C], n=1)
    return _run(stub, [*A, *C, *TAIL], **fields)


def test_a_dropped_middle_keeps_what_follows(stub: Any) -> None:
    r = _reuse(stub)  # the server's --cache-reuse 8
    assert (r.final.timings.cache_n, r.final.timings.prompt_n) == (len(A) + len(C), 2)
    assert _reuse(stub).tokens == r.tokens  # deterministic
    assert _reuse(stub, n_cache_reuse=60).final.timings.cache_n == len(A) + len(C)


@pytest.mark.parametrize("n_cache_reuse", [0, 61])
def test_no_reuse_when_off_or_the_run_is_shorter(stub: Any, n_cache_reuse: int) -> None:
    r = _reuse(stub, n_cache_reuse=n_cache_reuse)
    assert (r.final.timings.cache_n, r.final.timings.prompt_n) == (len(A), len(C) + 2)


def test_without_the_flag_a_request_asks_for_it(grpc_stub: Any) -> None:
    def reuse(**fields: Any) -> CompletionResult:
        _run(grpc_stub, [*A, *B, *C], n=1, id_slot=2)
        return _run(grpc_stub, [*A, *C, *TAIL], id_slot=2, **fields)

    assert reuse().final.timings.cache_n == len(A)  # --cache-reuse defaults to 0
    assert reuse(n_cache_reuse=16).final.timings.cache_n == len(A) + len(C)


def test_a_negative_n_cache_reuse_is_invalid(stub: Any) -> None:
    r = complete(stub, prompt=A, n_predict=1, n_cache_reuse=-1)
    assert r.code == grpc.StatusCode.INVALID_ARGUMENT and "n_cache_reuse" in r.details
