"""Bad requests over real gRPC: INVALID_ARGUMENT with a clear message, and a server that keeps
serving, also the requests running beside the bad one.

The streaming contract (docs/api.md): a request found invalid before its stream starts fails
with the status alone (no message: a transcoding proxy has sent no body yet and can still answer
with an HTTP error status); one that fails after the stream started (in the engine, e.g. a
grammar that does not parse) first gets a final message carrying `error`, since a client behind
a transcoder never sees trailers."""

from __future__ import annotations

import threading
import time
from typing import Any

import grpc
import pytest
from grpc_harness import EXACT, CompletionResult, assert_same_generation, complete, greedy
from llama.v1 import tokenize_pb2

N_VOCAB = 128256

BAD_REQUESTS: list[tuple[str, dict[str, Any], str]] = [
    ("prompt longer than the context", {"prompt": "word " * 700}, "context"),
    ("token id above the vocabulary", {"prompt": [1, N_VOCAB]}, "vocabulary"),
    ("negative token id", {"prompt": [1, -5]}, "vocabulary"),
    ("fractional token id", {"prompt": [1, 2.5]}, "integer"),
    ("empty token list", {"prompt": []}, "empty"),
    # (top_p 2, top_k -7, mirostat 3, an unknown sampler... are brought into range or left
    # out, as llama-server does: test_prompts)
    ("n_probs 1000", {"n_probs": 1000}, "n_probs"),
    ("id_slot 99", {"id_slot": 99}, "id_slot"),
    ("n_predict -5", {"n_predict": -5}, "n_predict"),
    ("repeat_last_n -1", {"repeat_last_n": -1}, "repeat_last_n"),
    ("dry_penalty_last_n -1", {"dry_penalty_last_n": -1}, "dry_penalty_last_n"),
    ("n_keep -2", {"n_keep": -2}, "n_keep"),
    ("seed out of range", {"seed": -2}, "seed"),
    ("temperature NaN", {"temperature": "NaN"}, "finite"),
    ("logit_bias malformed", {"logit_bias": [[1, 2, 3]]}, "logit_bias"),
    ("logit_bias token outside vocabulary", {"logit_bias": [[N_VOCAB + 5, 1.0]]}, "vocabulary"),
    ("stop not strings", {"stop": [1, 2]}, "stop"),
    ("prompt of the wrong type", {"prompt": {"nested": True}}, "prompt"),
]


BAD_GRAMMAR: dict[str, Any] = {"grammar": "root ::= ["}
# A grammar that only accepts the empty text leaves only end-of-generation, which ignore_eos
# bans: the request's own constraints leave no token at its first sample (INVALID_ARGUMENT).
NO_TOKEN_LEFT: dict[str, Any] = {"grammar": 'root ::= ""', "ignore_eos": True}


def assert_invalid(r: CompletionResult, needle: str, in_stream: bool = False) -> None:
    assert r.code == grpc.StatusCode.INVALID_ARGUMENT, (r.code, r.details)
    assert needle.lower() in r.details.lower(), r.details
    if not in_stream:
        assert r.messages == []
        return
    last = r.messages[-1]
    assert last.stop and last.id
    assert last.error.code == 400 and last.error.type == "invalid_request_error"
    assert last.error.message == r.details
    assert not any(m.content for m in r.messages)


@pytest.mark.parametrize(("body", "needle"), [(b, n) for _, b, n in BAD_REQUESTS],
                         ids=[name for name, _, _ in BAD_REQUESTS])
def test_invalid_request_is_rejected_clearly(grpc_stub: Any, body: dict[str, Any],
                                             needle: str) -> None:
    body = {"prompt": "Hello", "n_predict": 4, **body}
    assert_invalid(complete(grpc_stub, **body), needle)


@pytest.mark.parametrize("prompt", [None, "absent"], ids=["null", "absent"])
def test_a_prompt_is_required(grpc_stub: Any, prompt: Any) -> None:
    body: dict[str, Any] = {"n_predict": 4} if prompt == "absent" else {"prompt": prompt}
    assert_invalid(complete(grpc_stub, **body), '"prompt" must be provided')


def test_a_bad_grammar_is_refused_before_the_stream(grpc_stub: Any) -> None:
    r = complete(grpc_stub, prompt="Hello", n_predict=4, **BAD_GRAMMAR)
    assert_invalid(r, "grammar")


def test_failure_inside_the_stream_ends_with_an_error_message(grpc_stub: Any) -> None:
    r = complete(grpc_stub, prompt="Hello", n_predict=4, **NO_TOKEN_LEFT)
    assert_invalid(r, "selected no token", in_stream=True)


def test_server_keeps_serving_after_bad_requests(grpc_stub: Any) -> None:
    for _, body, _ in BAD_REQUESTS:
        complete(grpc_stub, **{"prompt": "Hello", "n_predict": 4, **body})
    r = greedy(grpc_stub, "Still alive?", 5)
    assert r.code == grpc.StatusCode.OK and len(r.tokens) == 5


@pytest.mark.slow
def test_bad_requests_do_not_disturb_a_running_generation(grpc_stub: Any) -> None:
    """Failures arrive while a generation runs, one of them inside the engine's step loop (a
    grammar that leaves no token once end-of-generation is banned fails at its first sample);
    the running output stays the solo one."""
    body = {"prompt": "Undisturbed", "n_predict": 400, "id_slot": 0, **EXACT}
    alone = complete(grpc_stub, **body)
    result: list[CompletionResult] = []
    ended_at: list[float] = []

    def run() -> None:
        result.append(complete(grpc_stub, **body))
        ended_at.append(time.monotonic())

    runner = threading.Thread(target=run)
    runner.start()
    for _ in range(10):
        assert_invalid(complete(grpc_stub, prompt="x", n_predict=3, **NO_TOKEN_LEFT),
                       "selected no token", in_stream=True)
        assert_invalid(complete(grpc_stub, prompt="x", n_predict=3, **BAD_GRAMMAR), "grammar")
        assert_invalid(complete(grpc_stub, prompt="x", n_predict=3, n_probs=-3), "n_probs")
    bad_done = time.monotonic()
    runner.join(60)
    assert result and result[0].code == grpc.StatusCode.OK
    assert ended_at[0] > bad_done, "the generation ended before the bad requests: no overlap"
    assert_same_generation(alone, result[0])


def test_detokenize_rejects_tokens_outside_the_vocabulary(grpc_stub: Any) -> None:
    with pytest.raises(grpc.RpcError) as err:
        grpc_stub.Detokenize(tokenize_pb2.DetokenizeRequest(tokens=[1, N_VOCAB + 1]), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_chat_without_messages_is_rejected(grpc_stub: Any) -> None:
    from grpc_harness import chat_request

    call = grpc_stub.ChatCompletion(chat_request(messages=[]), timeout=10)
    with pytest.raises(grpc.RpcError) as err:
        list(call)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "messages" in (err.value.details() or "")
