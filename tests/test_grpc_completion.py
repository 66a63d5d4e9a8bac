"""Completion over real gRPC (subprocess server, tiny-bpe, -c 2048 -np 4): the stream's shape,
stop strings, UTF-8, prompt caching, probabilities, sampling parameters, logit_bias, ignore_eos.

The model has random weights: its text is gibberish, but greedy runs (temperature 0) are
deterministic, so a run's own output is the reference for the next.
"""

from __future__ import annotations

import uuid
from itertools import pairwise
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_harness import CompletionResult, complete, completion_request, greedy
from llama.v1 import tokenize_pb2

import native

EOT = 128009  # Llama 3's <|eot_id|>, an end-of-generation token


def unique_text() -> str:
    """A prompt start no earlier request shares (so a slot's cache cannot match it)."""
    return f"zq{uuid.uuid4().hex[:12]} "


def tokens_of(stub: Any, text: str, add_special: bool = True) -> list[int]:
    req = tokenize_pb2.TokenizeRequest(content=text, add_special=add_special)
    return list(stub.Tokenize(req).tokens)


# -- the stream -----------------------------------------------------------------------------
def test_stream_order_and_final_stats(grpc_stub: Any) -> None:
    r = greedy(grpc_stub, "The quick brown fox", 16)
    assert r.code == grpc.StatusCode.OK
    first, *middle, last = r.messages
    assert first.id.startswith("cmpl-") and not first.stop
    assert all(m.id == first.id for m in r.messages)
    assert middle and all(not m.stop for m in middle)
    assert last.stop and last is r.final
    assert last.stop_type == "limit" and not last.HasField("error")
    assert last.tokens_predicted == 16 == len(r.tokens)
    assert last.tokens_evaluated == len(tokens_of(grpc_stub, "The quick brown fox"))
    assert last.id_slot in range(4) and all(m.id_slot == last.id_slot for m in middle)
    assert last.usage.completion_tokens == 16
    assert last.usage.prompt_tokens == last.tokens_evaluated
    assert last.usage.total_tokens == 16 + last.tokens_evaluated
    # llama-server's settings echo: no n_ctx or model, no draft settings but their types.
    gs = last.generation_settings
    assert not gs.HasField("n_ctx") and not gs.HasField("model")
    assert gs.speculative_types == "none" and gs.chat_format == "Content-only"
    assert gs.temperature == 0.0
    t = last.timings
    assert t.predicted_n == 16
    assert t.prompt_n + t.cache_n == last.tokens_evaluated
    # What the slot's cache holds at the end: the prompt and every token but the last.
    assert last.tokens_cached == last.tokens_evaluated + 16 - 1
    assert t.prompt_ms > 0 and t.predicted_ms > 0
    assert t.prompt_per_second == pytest.approx(1e3 * t.prompt_n / t.prompt_ms)
    assert t.predicted_per_second == pytest.approx(1e3 * t.predicted_n / t.predicted_ms)
    assert t.predicted_per_token_ms == pytest.approx(t.predicted_ms / t.predicted_n)
    assert not any(m.HasField("timings") for m in r.messages[:-1])


def test_greedy_is_deterministic_and_content_is_the_token_text(grpc_stub: Any) -> None:
    a = greedy(grpc_stub, "Once upon a time", 24)
    b = greedy(grpc_stub, "Once upon a time", 24, cache_prompt=False)
    assert a.tokens == b.tokens and a.content == b.content
    detok = grpc_stub.Detokenize(tokenize_pb2.DetokenizeRequest(tokens=a.tokens)).content
    assert a.content == detok


def test_stream_false_sends_one_final_message_with_everything(grpc_stub: Any) -> None:
    streamed = greedy(grpc_stub, "Not streamed", 10, n_probs=2)
    whole = greedy(grpc_stub, "Not streamed", 10, n_probs=2, stream=False)
    assert whole.code == grpc.StatusCode.OK
    assert len(whole.messages) == 1 and whole.messages[0].stop
    fin = whole.final
    assert fin.content == streamed.content and fin.stop_type == "limit"
    assert fin.tokens_predicted == 10
    assert [p.id for p in fin.completion_probabilities] == streamed.tokens
    assert list(fin.tokens) == []  # token ids only with return_tokens (llama-server's rule)
    with_tokens = greedy(grpc_stub, "Not streamed", 10, stream=False, return_tokens=True)
    assert list(with_tokens.final.tokens) == streamed.tokens


def test_timings_per_token(grpc_stub: Any) -> None:
    r = greedy(grpc_stub, "Timings please", 6, timings_per_token=True)
    content = [m for m in r.chunks if m.tokens]
    assert content and all(m.HasField("timings") for m in content)
    assert [m.timings.predicted_n for m in content] == list(range(1, len(content) + 1))


def test_the_last_message_before_a_stop_string_ending_carries_the_timings(
        grpc_stub: Any) -> None:
    """As llama-server: the partial of the token that completes a stop string has timings
    (it is known to be the last); no other partial has them without timings_per_token."""
    free = greedy(grpc_stub, "Timings at the stop", 24)
    stop = next(c for c in free.content[1:] if c.strip())  # a character it will generate
    r = greedy(grpc_stub, "Timings at the stop", 24, stop=[stop])
    assert r.final.stop_type == "word" and r.final.stopping_word == stop
    content = [m for m in r.chunks if m.tokens]
    assert content[-1].HasField("timings")
    assert not any(m.HasField("timings") for m in content[:-1])


def test_typed_prompt_equals_json_prompt(grpc_stub: Any) -> None:
    ids = tokens_of(grpc_stub, " brown fox", add_special=False)
    typed = {"prompts": [{"pieces": [{"text": "The quick"}, {"tokens": {"ids": ids}}]}]}
    a = complete(grpc_stub, typed_prompt=typed, n_predict=8, temperature=0.0)
    b = greedy(grpc_stub, ["The quick", *ids], 8)
    assert a.code == b.code == grpc.StatusCode.OK
    assert a.tokens == b.tokens
    assert a.final.tokens_evaluated == b.final.tokens_evaluated


def test_several_prompts_each_get_an_index_and_a_final_message(grpc_stub: Any) -> None:
    r = greedy(grpc_stub, ["First prompt", "Second prompt here"], 5)
    assert r.code == grpc.StatusCode.OK
    finals = {m.index: m for m in r.messages if m.stop}
    assert set(finals) == {0, 1}
    for i, text in enumerate(["First prompt", "Second prompt here"]):
        alone = greedy(grpc_stub, text, 5)
        assert [t for m in r.messages if m.index == i for t in m.tokens] == alone.tokens
        assert finals[i].tokens_evaluated == alone.final.tokens_evaluated


# -- stop strings and UTF-8 -----------------------------------------------------------------
def _split_stop(r: CompletionResult) -> tuple[str, int, int]:
    """A stop string made of the last 2 characters of one token and the first 2 of the next,
    first occurring exactly there in the greedy text; where it starts, and how many tokens it
    takes to complete it."""
    chunks = [m for m in r.chunks if m.tokens]
    pos, n_tokens = 0, 0
    for a, b in pairwise(chunks):
        pos += len(a.content)
        n_tokens += len(a.tokens)
        if len(a.tokens) == len(b.tokens) == 1 and len(a.content) >= 2 and len(b.content) >= 2:
            stop = a.content[-2:] + b.content[:2]
            if stop.isascii() and r.content.find(stop) == pos - 2:
                return stop, pos - 2, n_tokens + 1
    raise AssertionError(f"no usable token pair in {r.content!r}")


def test_stop_string_split_across_tokens_never_leaks(grpc_stub: Any) -> None:
    prompt = "A story about a dragon"
    ref = greedy(grpc_stub, prompt, 40)
    stop, at, n_tokens = _split_stop(ref)
    r = greedy(grpc_stub, prompt, 40, stop=["never-generated-zzz", stop])
    assert r.code == grpc.StatusCode.OK
    # Nothing of the stop string and nothing after it, although the first token of it was
    # generated a step before the stop string was complete.
    assert r.content == ref.content[:at]
    fin = r.final
    assert fin.stop_type == "word" and fin.stopping_word == stop
    # It ended on the token that completed the stop string; all tokens are still reported.
    assert r.tokens == ref.tokens[:n_tokens]
    assert fin.tokens_predicted == n_tokens


def test_stop_string_as_single_string_and_earliest_wins(grpc_stub: Any) -> None:
    prompt = "Numbers and words"
    ref = greedy(grpc_stub, prompt, 30)
    text = ref.content
    early, late = text[5:8], text[15:19]
    r = greedy(grpc_stub, prompt, 30, stop=[late, early])
    cut = min(text.find(early), text.find(late))
    assert r.content == text[:cut]
    assert r.final.stopping_word == (early if text.find(early) == cut else late)
    single = greedy(grpc_stub, prompt, 30, stop=late)
    assert single.content == text[:text.find(late)]


@pytest.fixture(scope="module")
def byte_tokens(tiny_bpe_path: Path) -> dict[int, int]:
    """Byte value -> the token whose piece is that single byte (byte-level BPE has all 256)."""
    model = native.Model(tiny_bpe_path, native.ModelParams(vocab_only=True))
    try:
        out: dict[int, int] = {}
        for tok in range(512):
            piece = model.vocab.token_to_piece(tok, special=False)
            if len(piece) == 1:
                out.setdefault(piece[0], tok)
        return out
    finally:
        model.close()


def test_multibyte_text_is_never_split(grpc_stub: Any, byte_tokens: dict[int, int]) -> None:
    """A grammar fixes the text; biases make the model spell it byte by byte, so 2-, 3- and
    4-byte characters arrive as 1-byte tokens. No message may hold half a character."""
    text = "é€😀日本 ok"
    data = text.encode()
    bias = [[byte_tokens[b], 30.0] for b in set(data) if b >= 0x80]
    r = greedy(grpc_stub, "Say it:", 64, grammar=f'root ::= "{text}"', logit_bias=bias,
               n_probs=1)
    assert r.code == grpc.StatusCode.OK
    assert r.content == text and r.final.stop_type == "eos"
    split_tokens = [t for t in r.tokens if t in byte_tokens.values()]
    assert len(split_tokens) >= 8, "the test should have produced single-byte tokens"
    for m in r.messages:
        assert "\ufffd" not in m.content
        m.content.encode("utf-8")  # whole characters only (a lone surrogate would fail here)
    # Tokens are reported with the message whose text they completed.
    with_tokens = [m for m in r.chunks if m.tokens]
    assert any(len(m.tokens) > 1 for m in with_tokens)
    # A token's own text in the probabilities leaves out a cut-off character, as llama-server
    # does; its bytes are all there.
    probs = [p for m in r.messages for p in m.completion_probabilities]
    lead = next(p for p in probs if len(p.bytes) == 1 and p.bytes[0] >= 0xC0)
    assert lead.token == ""
    assert b"".join(bytes(p.bytes) for p in probs[:-1]) == data  # the last one is the EOS


# -- n_predict 0 and prompt caching ---------------------------------------------------------
def test_n_predict_zero_evaluates_the_prompt_only(grpc_stub: Any) -> None:
    # Token prompt without BOS: no earlier prompt in any slot shares even its first token.
    prompt = tokens_of(grpc_stub, unique_text() + "only the prompt, please", add_special=False)
    r = complete(grpc_stub, prompt=prompt, n_predict=0, id_slot=2)
    assert r.code == grpc.StatusCode.OK
    fin = r.final
    assert fin.stop_type == "limit" and fin.tokens_predicted == 0
    assert r.content == "" and r.tokens == []
    assert fin.timings.cache_n == 0 and fin.tokens_evaluated == len(prompt)
    assert fin.tokens_cached == len(prompt)  # the slot's cache holds the prompt
    assert fin.timings.prompt_n == len(prompt)
    again = complete(grpc_stub, prompt=prompt, n_predict=0, id_slot=2)
    assert again.final.timings.cache_n == len(prompt) - 1  # the last token is evaluated again
    assert again.final.timings.prompt_n == 1


def test_shared_prefix_is_reused_and_only_the_rest_evaluated(grpc_stub: Any) -> None:
    prefix = unique_text() + " ".join(f"item{i}" for i in range(60))
    first = greedy(grpc_stub, prefix + " and then the first ending", 2)
    p1 = tokens_of(grpc_stub, prefix + " and then the first ending")
    p2 = tokens_of(grpc_stub, prefix + " but a second, different ending")
    shared = next(i for i, (a, b) in enumerate(zip(p1, p2, strict=False)) if a != b)
    assert shared > 100 and first.final.timings.cache_n <= 1
    # No id_slot: slot choice by prompt similarity must find the slot holding the prefix.
    second = greedy(grpc_stub, prefix + " but a second, different ending", 2)
    fin = second.final
    assert fin.id_slot == first.final.id_slot
    assert fin.timings.cache_n == shared
    assert fin.tokens_cached == len(p2) + 1  # and the first of the 2 generated tokens
    assert fin.timings.prompt_n == len(p2) - shared
    assert fin.tokens_evaluated == len(p2)
    assert fin.usage.prompt_tokens_details.cached_tokens == shared


def test_cache_prompt_false_evaluates_everything(grpc_stub: Any) -> None:
    prompt = unique_text() + "evaluate me twice"
    greedy(grpc_stub, prompt, 1, id_slot=1)
    r = greedy(grpc_stub, prompt, 1, id_slot=1, cache_prompt=False)
    assert r.final.timings.cache_n == 0
    assert r.final.timings.prompt_n == r.final.tokens_evaluated


# -- probabilities --------------------------------------------------------------------------
def test_n_probs_reports_top_logprobs(grpc_stub: Any) -> None:
    r = greedy(grpc_stub, "Probabilities", 8, n_probs=5, repeat_penalty=1.0)
    assert r.code == grpc.StatusCode.OK
    probs = [p for m in r.messages for p in m.completion_probabilities]
    assert [p.id for p in probs] == r.tokens
    for p in probs:
        top = p.top_logprobs
        assert len(top) == 5 and not p.top_probs
        values = [c.logprob for c in top]
        assert values == sorted(values, reverse=True) and all(v <= 0 for v in values)
        assert top[0].id == p.id  # greedy without penalties: the most likely token
        assert p.logprob == pytest.approx(top[0].logprob, abs=1e-5)
        assert bytes(p.bytes).decode("utf-8", "replace").startswith(p.token[:1])


def test_post_sampling_probs_reports_top_probs(grpc_stub: Any) -> None:
    r = complete(grpc_stub, prompt="Post sampling", n_predict=8, n_probs=5,
                 post_sampling_probs=True, temperature=1.0, top_k=3, seed=7)
    assert r.code == grpc.StatusCode.OK
    probs = [p for m in r.messages for p in m.completion_probabilities]
    assert len(probs) == 8
    for p in probs:
        assert not p.top_logprobs and 1 <= len(p.top_probs) <= 3  # top_k 3 leaves 3 at most
        assert all(0.0 <= c.prob <= 1.0 for c in p.top_probs)
        assert sum(c.prob for c in p.top_probs) == pytest.approx(1.0, abs=1e-3)
        assert p.id in [c.id for c in p.top_probs]
        assert p.prob == pytest.approx(next(c.prob for c in p.top_probs if c.id == p.id))


# -- sampling parameters --------------------------------------------------------------------
ALL_SAMPLING: dict[str, Any] = {
    "temperature": 0.9, "dynatemp_range": 0.3, "dynatemp_exponent": 1.2, "top_k": 50,
    "top_p": 0.9, "min_p": 0.01, "top_n_sigma": 3.0, "typical_p": 0.95,
    "xtc_probability": 0.3, "xtc_threshold": 0.05, "repeat_penalty": 1.05,
    "repeat_last_n": 32, "presence_penalty": 0.2, "frequency_penalty": 0.1,
    "dry_multiplier": 0.8, "dry_base": 1.5, "dry_allowed_length": 2, "dry_penalty_last_n": 64,
    "dry_sequence_breakers": ["\n", "."], "mirostat": 0, "mirostat_tau": 4.0,
    "mirostat_eta": 0.2, "min_keep": 2, "seed": 1234, "ignore_eos": True, "n_keep": 4,
    "samplers": ["penalties", "dry", "top_n_sigma", "top_k", "typ_p", "top_p", "min_p", "xtc",
                 "temperature"],
    "logit_bias": [[15, -1.0], ["hello", 0.5]], "n_probs": 2, "t_max_predict_ms": 60000,
    "cache_prompt": True, "timings_per_token": True, "return_tokens": True, "n_indent": 0,
}


def test_every_sampling_parameter_is_accepted_and_seeded_runs_repeat(grpc_stub: Any) -> None:
    a = complete(grpc_stub, prompt="Every knob", n_predict=20, **ALL_SAMPLING)
    assert a.code == grpc.StatusCode.OK, a.details
    assert a.final.stop_type == "limit" and len(a.tokens) == 20
    b = complete(grpc_stub, prompt="Every knob", n_predict=20, **ALL_SAMPLING)
    assert a.tokens == b.tokens
    gs = a.final.generation_settings
    assert gs.seed == 1234 and gs.top_k == 50 and gs.mirostat == 0
    assert list(gs.samplers) == ALL_SAMPLING["samplers"]
    assert list(gs.dry_sequence_breakers) == ["\n", "."]


@pytest.mark.parametrize("mirostat", [1, 2])
def test_mirostat_runs_and_repeats_with_a_seed(grpc_stub: Any, mirostat: int) -> None:
    body: dict[str, Any] = {"prompt": "Mirostat", "n_predict": 12, "mirostat": mirostat,
                            "mirostat_tau": 3.0, "mirostat_eta": 0.2, "temperature": 0.8,
                            "seed": 99}
    a, b = complete(grpc_stub, **body), complete(grpc_stub, **body)
    assert a.code == grpc.StatusCode.OK, a.details
    assert len(a.tokens) == 12 and a.tokens == b.tokens


def test_seed_makes_sampling_reproducible(grpc_stub: Any) -> None:
    def run(seed: int) -> list[int]:
        return complete(grpc_stub, prompt="Random walk", n_predict=16, temperature=1.5,
                        top_k=0, top_p=1.0, min_p=0.0, seed=seed).tokens

    assert run(5) == run(5)
    assert len({tuple(run(s)) for s in (5, 6, 7)}) > 1  # and the seed matters


def test_samplers_order_and_greedy_via_top_k_1(grpc_stub: Any) -> None:
    ref = greedy(grpc_stub, "Sampler order", 10, repeat_penalty=1.0)
    r = complete(grpc_stub, prompt="Sampler order", n_predict=10, temperature=2.0, top_k=1,
                 samplers=["top_k", "temperature"], repeat_penalty=1.0, seed=3)
    assert r.tokens == ref.tokens  # top_k 1 first leaves only the argmax whatever follows


def test_no_samplers_is_the_dist_draw_alone(grpc_stub: Any) -> None:
    """llama-server's `"samplers": []`: no temperature stage, so temperature 0 is not greedy;
    the seed still decides the draw, and the echo is an empty list."""
    def run(seed: int) -> CompletionResult:
        return complete(grpc_stub, prompt="Random walk", n_predict=16, temperature=0.0,
                        no_samplers=True, seed=seed)

    first = run(5)
    assert first.code == grpc.StatusCode.OK, first.details
    assert list(first.final.generation_settings.samplers) == []
    assert first.tokens == run(5).tokens
    assert len({tuple(run(s).tokens) for s in (5, 6, 7)}) > 1
    bad = complete(grpc_stub, prompt="x", n_predict=1, no_samplers=True, samplers=["top_k"])
    assert bad.code == grpc.StatusCode.INVALID_ARGUMENT and "no_samplers" in bad.details


# -- logit_bias and ignore_eos --------------------------------------------------------------
def test_logit_bias_false_bans_a_token(grpc_stub: Any) -> None:
    ref = greedy(grpc_stub, "Ban the first token", 4)
    first = ref.tokens[0]
    for bias in ([[first, False]], {str(first): False}):
        r = greedy(grpc_stub, "Ban the first token", 4, logit_bias=bias)
        assert r.code == grpc.StatusCode.OK
        assert first not in r.tokens


def test_logit_bias_can_force_a_token(grpc_stub: Any) -> None:
    r = greedy(grpc_stub, "Force", 3, logit_bias=[[1234, 100.0]], repeat_penalty=1.0)
    assert r.tokens == [1234, 1234, 1234]


def test_end_of_generation_stops_unless_ignore_eos(grpc_stub: Any) -> None:
    eos = greedy(grpc_stub, "Stop at once", 10, logit_bias=[[EOT, 100.0]])
    assert eos.final.stop_type == "eos"
    assert eos.tokens == [EOT] and eos.content == ""
    ignored = greedy(grpc_stub, "Stop at once", 10, logit_bias=[[EOT, 100.0]], ignore_eos=True)
    assert ignored.final.stop_type == "limit"
    assert len(ignored.tokens) == 10 and EOT not in ignored.tokens


# -- OpenAI completion shape ----------------------------------------------------------------
def test_openai_completion_shape(grpc_stub: Any) -> None:
    msgs = list(grpc_stub.OpenAICompletion(completion_request(
        prompt="OpenAI shape", n_predict=6, temperature=0.0), timeout=60))
    ref = greedy(grpc_stub, "OpenAI shape", 6)
    assert all(m.object == "text_completion" and m.id == msgs[0].id for m in msgs)
    assert "".join(c.text for m in msgs for c in m.choices) == ref.content
    last = msgs[-1]
    assert last.choices[0].finish_reason == "length"
    assert not any(m.choices[0].HasField("finish_reason") for m in msgs[:-1] if m.choices)
    assert last.usage.completion_tokens == 6


@pytest.mark.parametrize(("field", "message"), [
    ({"echo": True}, "echo"), ({"best_of": 2}, "best_of"), ({"suffix": "x"}, "suffix")])
def test_openai_completion_refuses_what_llama_server_refuses(grpc_stub: Any,
                                                             field: dict[str, Any],
                                                             message: str) -> None:
    call = grpc_stub.OpenAICompletion(completion_request(prompt="x", n_predict=1, **field),
                                      timeout=30)
    with pytest.raises(grpc.RpcError) as err:
        list(call)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (err.value.details() or "")


def test_openai_completion_logprobs_means_n_probs(grpc_stub: Any) -> None:
    msgs = list(grpc_stub.OpenAICompletion(completion_request(
        prompt="x", n_predict=3, temperature=0.0, logprobs=2), timeout=30))
    content = [c for m in msgs for ch in m.choices for c in ch.logprobs.content]
    assert len(content) == 3 and all(len(c.top_logprobs) == 2 for c in content)
