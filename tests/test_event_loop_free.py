"""Nothing blocks the server's event loop: while two big requests are being worked on, a health
check and a short completion are answered, and both end before either big request does.

The big requests, each seconds of server CPU on this repository's 2-core machine:
- a Tokenize of ~100,000 tokens, plain text with a special token every other word: llama.cpp
  splits out special tokens before tokenizing, in time that grows with their count times the
  text's length (100,000 tokens of plain text take ~0.1 s, too short a window; this text ~3 s;
  100,000 special tokens alone ~60 s);
- a Completion (n_predict 1) whose json_schema is an object of thousands of properties with
  regex patterns, which our Python converter (service/json_schema_grammar.py) takes ~3 s to turn
  into a grammar; the request is valid and must be served.

Ordering, not timing: the big requests are sent first; the test waits until the server process
has spent CPU time on them (so they have arrived and are being worked on), then runs a few
rounds of (health check, short completion), asserting after each round that neither big
request has finished. A loop blocked by one big request answers a round only once that request
is done, so at the latest the next round sees it finished. If the big requests became fast
enough to end first, the test fails (it does not pass vacuously).
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_harness import SERVING, CompletionResult, ServiceProcess, complete, running_service
from grpc_health.v1 import health_pb2, health_pb2_grpc
from llama.v1 import service_pb2_grpc, tokenize_pb2

ROUNDS = 3
BUSY_CPU_S = 0.5  # server CPU time spent after the big requests were sent: they are running
TIMEOUT_S = 300.0
SPECIAL_TOKEN_MIN = 128000  # Llama-3 vocabulary (tiny-bpe): special tokens from here on
SYLLABLES = ["ka", "lo", "mi", "ren", "sta", "vu", "zo", "pe", "tri", "qua", "nel", "dor"]
PATTERNS = [r"^(?:[A-Z][a-z]{1,12} ){2,4}\d{3}-\d{4}(?:x\d{1,5})?$",
            r"^[a-z0-9._%+-]{1,20}@[a-z0-9-]{1,15}\.(com|org|net|io)$",
            r"^#?([a-f0-9]{6}|[a-f0-9]{3})$",
            r"^(\+|-)?(0|[1-9][0-9]{0,8})(\.[0-9]{1,6})?$"]


def long_text(n_words: int = 32000) -> str:
    """~100,000 tokens of made-up sentences with a special token after every other word."""
    rng = random.Random(7)
    out = []
    for i in range(n_words):
        word = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3)))
        out.append(word if i % 7 else word.capitalize() + ".")
        if i % 2 == 0:
            out.append(f"<|reserved_special_token_{i % 200}|>")
    return " ".join(out)


def large_schema(n_properties: int = 4000) -> dict[str, Any]:
    """An object of `n_properties` required strings, each with its own regex pattern."""
    props = {f"p{i}": {"type": "string",
                       "pattern": PATTERNS[i % 4].replace("{1,", f"{{{1 + i % 3},")}
             for i in range(n_properties)}
    return {"type": "object", "properties": props, "required": list(props)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid`, all its threads (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture(scope="module")
def service(tiny_bpe_path: Path) -> Iterator[ServiceProcess]:
    with running_service(tiny_bpe_path) as svc:
        yield svc


def own_channel(svc: ServiceProcess) -> grpc.Channel:
    """A channel with a connection of its own (not shared through the global subchannel pool),
    so small requests never queue behind a big one's bytes on the client side."""
    return grpc.insecure_channel(svc.address, options=[("grpc.use_local_subchannel_pool", 1)])


@pytest.mark.slow
def test_small_requests_are_answered_while_big_ones_run(service: ServiceProcess) -> None:
    text = long_text()
    schema = large_schema()
    order: list[str] = []  # completion order, for the failure messages
    lock = threading.Lock()
    tokenized = threading.Event()
    schema_done = threading.Event()
    big_result: list[CompletionResult] = []

    def note(event: str) -> None:
        with lock:
            order.append(event)

    def big_done() -> bool:
        return tokenized.is_set() or schema_done.is_set()

    big_channel, small_channel = own_channel(service), own_channel(service)
    try:
        big_stub = service_pb2_grpc.LlamaServerStub(big_channel)
        small_stub = service_pb2_grpc.LlamaServerStub(small_channel)
        health = health_pb2_grpc.HealthStub(small_channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=30).status == SERVING

        def run_schema_completion() -> None:
            big_result.append(complete(big_stub, timeout=TIMEOUT_S, prompt="Fill in the form:",
                                       n_predict=1, json_schema=schema))
            note("schema completion done")
            schema_done.set()

        def on_tokenized(_: Any) -> None:
            note("tokenize done")
            tokenized.set()

        baseline = cpu_seconds(service.proc.pid)
        tokenize = big_stub.Tokenize.future(
            tokenize_pb2.TokenizeRequest(content=text, parse_special=True), timeout=TIMEOUT_S)
        tokenize.add_done_callback(on_tokenized)
        schema_thread = threading.Thread(target=run_schema_completion)
        schema_thread.start()

        # Wait until the server works on the big requests (its CPU time moves), not a set time.
        while cpu_seconds(service.proc.pid) - baseline < BUSY_CPU_S:
            assert not big_done(), f"a big request ended before the server got busy: {order}"
            tokenized.wait(0.02)

        for i in range(ROUNDS):
            assert not big_done(), (
                f"a big request ended before round {i} was sent (make it bigger): {order}")
            check = health.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S)
            assert check.status == SERVING
            short = complete(small_stub, timeout=TIMEOUT_S, prompt="Hi", n_predict=2,
                             temperature=0.0)
            assert short.code == grpc.StatusCode.OK, short.details
            assert len(short.tokens) == 2
            note(f"round {i} done")
            assert not big_done(), (
                f"round {i} (health check, short completion) ended after a big request: the "
                f"event loop was blocked: {order}")

        tokens = tokenize.result(timeout=TIMEOUT_S).tokens
        schema_thread.join(TIMEOUT_S)
        assert 90_000 <= len(tokens) <= 110_000, len(tokens)
        assert sum(t >= SPECIAL_TOKEN_MIN for t in tokens) == 16000
        assert big_result, "the schema completion did not end"
        big = big_result[0]
        assert big.code == grpc.StatusCode.OK, (big.code, big.details)  # accepted, not refused
        assert len(big.tokens) == 1 and big.content.startswith("{"), big.content
        assert order[:ROUNDS] == [f"round {i} done" for i in range(ROUNDS)], order
    finally:
        big_channel.close()
        small_channel.close()
