"""A full context over real gRPC (tiny-bpe, -c 256 -np 1): with --context-shift, generation goes
on past the context by discarding half of what follows n_keep, and reports truncated; without it
(the default, or --no-context-shift) generation stops at the end of the context, truncated."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_harness import ServiceProcess, complete, running_service

N_CTX = 256
LONG: dict[str, Any] = {"prompt": "A tale that does not fit", "n_predict": 400, "ignore_eos": True,
        "temperature": 0.0}


@pytest.fixture(scope="module")
def shifting(tiny_bpe_path: Path) -> Iterator[ServiceProcess]:
    with running_service(tiny_bpe_path, "--context-shift", ctx=N_CTX, parallel=1) as svc:
        yield svc


@pytest.mark.slow
def test_context_shift_keeps_generating(shifting: ServiceProcess) -> None:
    stub = shifting.stub()
    r = complete(stub, **LONG)
    assert r.code == grpc.StatusCode.OK, r.details
    fin = r.final
    assert fin.stop_type == "limit" and fin.truncated
    assert fin.tokens_predicted == 400 == len(r.tokens)
    assert fin.tokens_evaluated + 400 > N_CTX
    # The slot still works, and a short request fitting in the context is not truncated.
    short = complete(stub, prompt="Short", n_predict=5, temperature=0.0)
    assert short.code == grpc.StatusCode.OK and not short.final.truncated


@pytest.mark.slow
def test_context_shift_keeps_n_keep_tokens(shifting: ServiceProcess) -> None:
    stub = shifting.stub()
    r = complete(stub, **{**LONG, "n_keep": -1, "n_predict": 300})
    assert r.code == grpc.StatusCode.OK, r.details
    assert r.final.truncated and r.final.tokens_predicted == 300


@pytest.mark.slow
@pytest.mark.parametrize("flags", [(), ("--no-context-shift",)], ids=["default", "no-shift"])
def test_without_context_shift_generation_stops_at_the_context_end(
        tiny_bpe_path: Path, flags: tuple[str, ...]) -> None:
    with running_service(tiny_bpe_path, *flags, ctx=N_CTX, parallel=1) as svc:
        stub = svc.stub()
        r = complete(stub, **LONG)
        assert r.code == grpc.StatusCode.OK, r.details
        fin = r.final
        assert fin.stop_type == "limit" and fin.truncated
        # As llama-server, the generation stops when the next token would take the context's
        # last cell (n_past + 1 >= n_ctx): the last sampled token is reported, not decoded.
        assert fin.tokens_evaluated + fin.tokens_predicted == N_CTX
        assert fin.tokens_predicted == len(r.tokens) < 400
