"""Several clients at once over real gRPC: continuous batching keeps each request's output its
own, requests beyond the free slots wait and complete, and cancelling (the call itself, or the
Cancel RPC by id) frees the slot and its KV cells at once.

Batched and solo runs are compared with `assert_same_generation` (see its tolerance).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from cancel_harness import wait_free, wait_load
from grpc_harness import (
    EXACT,
    CompletionResult,
    ServiceProcess,
    assert_same_generation,
    complete,
    completion_request,
    running_service,
)
from llama.v1 import server_pb2, service_pb2_grpc

PROMPTS = [
    "The quick brown fox", "Once upon a time, in a land far away", "def fibonacci(n):",
    "日本語のテキスト and more", "SELECT * FROM users WHERE", "Dear Sir or Madam,",
    "1, 2, 3, 4,", "<html><body>",
]


@pytest.fixture(scope="module")
def eight_slots(tiny_bpe_path: Path) -> Iterator[ServiceProcess]:
    # A small batch (-b 64): prompts are evaluated in chunks spread over several steps,
    # beside the generating slots' tokens.
    with running_service(tiny_bpe_path, "-b", "64", ctx=4096, parallel=8) as svc:
        yield svc


def _run_all(stub: Any, bodies: list[dict[str, Any]]) -> list[CompletionResult]:
    barrier = threading.Barrier(len(bodies))

    def one(body: dict[str, Any]) -> CompletionResult:
        barrier.wait()  # submit together, so the engine batches them
        return complete(stub, **body)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(one, bodies))


@pytest.mark.slow
def test_eight_concurrent_clients_each_get_their_own_output(
        eight_slots: ServiceProcess) -> None:
    stub = eight_slots.stub()
    bodies = [{"prompt": p, "n_predict": 24, **EXACT} for p in PROMPTS]
    alone = [complete(stub, **b) for b in bodies]
    assert len({tuple(r.tokens) for r in alone}) == len(PROMPTS)  # distinguishable outputs
    batched = _run_all(stub, bodies)
    for ref, got in zip(alone, batched, strict=True):
        assert_same_generation(ref, got)
    # Each call really ran beside the others: eight different slots.
    assert sorted(r.final.id_slot for r in batched) == list(range(8))


@pytest.mark.slow
def test_concurrent_clients_with_different_lengths_and_stops(
        eight_slots: ServiceProcess) -> None:
    """Requests that end at different steps (limit, stop string) leave the others intact."""
    stub = eight_slots.stub()
    bodies = [{"prompt": p, "n_predict": 6 + 5 * i, **EXACT} for i, p in enumerate(PROMPTS)]
    alone = [complete(stub, **b) for b in bodies]
    stops = [r.content[4:7] for r in alone[:4]]
    for body, stop in zip(bodies, stops, strict=False):
        body["stop"] = [stop]
    alone[:4] = [complete(stub, **b) for b in bodies[:4]]
    batched = _run_all(stub, bodies)
    for ref, got in zip(alone, batched, strict=True):
        assert_same_generation(ref, got)
        assert got.final.stop_type == ref.final.stop_type


@pytest.mark.slow
def test_long_prompts_are_evaluated_in_chunks_beside_generation(
        eight_slots: ServiceProcess, grpc_service: ServiceProcess) -> None:
    """Prompts of 300 tokens take five steps of -b 64, shared with a generating request; the
    outputs are those of a server that evaluates each prompt in one step."""
    long_prompts = [" ".join(f"{w}{i}" for i in range(150)) for w in ("alpha", "beta")]
    bodies = [{"prompt": PROMPTS[0], "n_predict": 60, **EXACT},
              *({"prompt": p, "n_predict": 10, **EXACT} for p in long_prompts)]
    unchunked = [complete(grpc_service.stub(), **b) for b in bodies]
    stub = eight_slots.stub()
    gen = threading.Thread(target=lambda: results.append(complete(stub, **bodies[0])))
    results: list[CompletionResult] = []
    gen.start()
    chunked = _run_all(stub, bodies[1:])
    gen.join(60)
    for ref, got in zip(unchunked, [*results, *chunked], strict=True):
        assert_same_generation(ref, got)
    assert all(r.final.tokens_evaluated > 256 for r in chunked)
    assert all(r.final.timings.prompt_n == r.final.tokens_evaluated for r in chunked)


def test_request_for_a_busy_slot_waits_for_it(grpc_stub: Any) -> None:
    """A request pinned to a busy slot waits (GetLoad shows it queued while the first one
    generates) and starts once that slot's generation ended."""
    body = {"prompt": "first in line", "id_slot": SLOT, "n_predict": 400, **EXACT}
    alone = complete(grpc_stub, **body)
    first = grpc_stub.Completion(completion_request(**body), timeout=60)
    first_stream = iter(first)
    messages = [next(first_stream)]
    second: list[CompletionResult] = []
    follower = threading.Thread(target=lambda: second.append(complete(
        grpc_stub, prompt="second in line", n_predict=2, id_slot=SLOT, temperature=0.0)))
    follower.start()
    load = wait_load(grpc_stub, lambda ld: ld.n_waiting == 1, "the second one waits")
    assert load.slots[SLOT].busy
    messages.extend(first_stream)
    follower.join(60)
    assert second and second[0].final.id_slot == SLOT
    assert second[0].final.stop_type == "limit"
    assert_same_generation(alone, CompletionResult(messages=messages))


@pytest.mark.slow
def test_more_clients_than_slots_all_complete(grpc_service: ServiceProcess) -> None:
    stub = grpc_service.stub()
    bodies = [{"prompt": f"Client number {i} says", "n_predict": 12, **EXACT}
              for i in range(10)]
    results = _run_all(stub, bodies)
    for r in results:
        assert r.code == grpc.StatusCode.OK, r.details
        assert r.final.stop_type == "limit" and len(r.tokens) == 12
    assert {r.final.id_slot for r in results} <= set(range(4))
    for body, r in zip(bodies[:3], results, strict=False):  # queued or not, the same output
        assert_same_generation(complete(stub, **body), r)


# -- cancellation ---------------------------------------------------------------------------
LONG: dict[str, Any] = {"n_predict": 5000, "ignore_eos": True, "temperature": 0.0}
SLOT = 3


def _follow_up(stub: Any, prompt: str) -> CompletionResult:
    """Once GetLoad shows SLOT free (idle, no cells), a request pinned to it with the cancelled
    request's prompt: it finds nothing of that prompt cached."""
    wait_free(stub, SLOT)
    result = complete(stub, prompt=prompt, n_predict=2, id_slot=SLOT, temperature=0.0)
    assert result.final.id_slot == SLOT and result.final.timings.cache_n == 0
    return result


def test_cancelling_the_call_frees_the_slot_and_its_kv(grpc_stub: Any) -> None:
    prompt = "A long story that will be cut short by the client"
    call = grpc_stub.Completion(completion_request(prompt=prompt, id_slot=SLOT, **LONG),
                                timeout=60)
    stream = iter(call)
    seen = [next(stream) for _ in range(5)]
    assert all(not m.stop for m in seen)
    call.cancel()
    with pytest.raises(grpc.RpcError) as err:
        list(stream)
    assert err.value.code() == grpc.StatusCode.CANCELLED
    _follow_up(grpc_stub, prompt)


def test_cancel_rpc_by_id_ends_the_stream_with_an_error_message(grpc_stub: Any) -> None:
    prompt = "Another long story, stopped through the Cancel RPC"
    call = grpc_stub.Completion(completion_request(prompt=prompt, id_slot=SLOT, **LONG),
                                timeout=60)
    stream = iter(call)
    first = next(stream)
    assert first.id and not first.stop
    next(stream)  # generating now
    resp = grpc_stub.Cancel(server_pb2.CancelRequest(id=first.id), timeout=10)
    assert resp.found
    rest: list[Any] = []
    with pytest.raises(grpc.RpcError) as err:
        for msg in stream:
            rest.append(msg)
    assert err.value.code() == grpc.StatusCode.CANCELLED
    last = rest[-1]
    assert last.stop and last.id == first.id
    assert last.error.code == 499 and last.error.type == "cancelled_error"
    assert sum(len(m.tokens) for m in rest) < LONG["n_predict"]
    _follow_up(grpc_stub, prompt)
    # The id is gone once the generation ended.
    assert not grpc_stub.Cancel(server_pb2.CancelRequest(id=first.id), timeout=10).found


def test_client_disconnect_frees_the_slot(grpc_service: ServiceProcess) -> None:
    """The client's connection goes away mid-stream (no cancel): the same as a cancel."""
    prompt = "A story whose reader hangs up"
    channel = grpc.insecure_channel(grpc_service.address)
    stub = service_pb2_grpc.LlamaServerStub(channel)
    stream = iter(stub.Completion(completion_request(prompt=prompt, id_slot=SLOT, **LONG),
                                  timeout=60))
    for _ in range(5):
        next(stream)
    channel.close()
    _follow_up(grpc_service.stub(), prompt)


@pytest.mark.slow
def test_cancelling_one_request_leaves_its_batch_neighbours_intact(
        eight_slots: ServiceProcess) -> None:
    stub = eight_slots.stub()
    body = {"prompt": PROMPTS[1], "n_predict": 200, **EXACT}
    alone = complete(stub, **body)
    done: list[CompletionResult] = []
    neighbour = threading.Thread(target=lambda: done.append(complete(stub, **body)))
    victim = stub.Completion(completion_request(prompt=PROMPTS[2], **LONG), timeout=60)
    victim_stream = iter(victim)
    next(victim_stream)
    neighbour.start()
    for _ in range(20):  # both are generating now
        next(victim_stream)
    victim.cancel()
    neighbour.join(60)
    assert done and done[0].final.stop_type == "limit"
    assert_same_generation(alone, done[0])


def test_cancel_of_an_unknown_id_finds_nothing(grpc_stub: Any) -> None:
    assert not grpc_stub.Cancel(server_pb2.CancelRequest(id="cmpl-nope"), timeout=10).found


def test_cancelling_a_queued_request(grpc_stub: Any) -> None:
    """A request waiting for a busy pinned slot, cancelled at once (it may still be in the
    engine's inbox, or not yet there): it never starts, and the slot stays with the runner."""
    runner = grpc_stub.Completion(completion_request(prompt="occupy", id_slot=SLOT, **LONG),
                                  timeout=60)
    running = iter(runner)
    next(running)
    waiting = grpc_stub.Completion(completion_request(prompt="wait", id_slot=SLOT, n_predict=4),
                                   timeout=60)
    waiting.cancel()
    with pytest.raises(grpc.RpcError) as err:
        list(waiting)
    assert err.value.code() == grpc.StatusCode.CANCELLED
    load = wait_load(grpc_stub, lambda ld: ld.n_waiting == 0, "nothing waits")
    assert load.slots[SLOT].busy  # the runner still has it
    runner.cancel()
    assert _follow_up(grpc_stub, "after both").final.stop_type == "limit"
