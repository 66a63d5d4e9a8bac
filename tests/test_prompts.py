"""Request parsing without a server: llama-server's polymorphic prompt, logit_bias and stop shapes
(service.prompts), the request -> parameters conversion (service.request_params) and parameter
validation (service.engine.params). Uses tiny-bpe's real Llama-3 vocabulary (loaded vocab-only)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2
from hypothesis import given
from hypothesis import strategies as st
from llama.v1 import chat_pb2, completion_pb2

import native
from service.engine.params import (
    CompletionParams,
    ParamError,
    SamplingParams,
    canonical_sampler,
)
from service.prompt_values import prompt_json, token_prompts, value_to_json
from service.prompts import parse_logit_bias, parse_stop, split_prompts, tokenize_prompt
from service.request_params import Defaults, choices_of, completion_params


@pytest.fixture(scope="module")
def vocab(tiny_bpe_path: Path) -> Iterator[native.Vocab]:
    model = native.Model(tiny_bpe_path, native.ModelParams(vocab_only=True))
    yield model.vocab
    model.close()


def request(**body: Any) -> Any:
    return json_format.ParseDict(body, completion_pb2.CompletionRequest())


# -- prompt shapes ----------------------------------------------------------------------------
@pytest.mark.parametrize(("prompt", "expected"), [
    ("text", ["text"]),
    (None, [""]),
    ([1, 2, 3], [[1, 2, 3]]),
    ([12, "text", 56], [[12, "text", 56]]),  # a mix is one prompt
    (["a", "b"], ["a", "b"]),
    ([[1, 2], [3]], [[1, 2], [3]]),
    (["a", [1, 2]], ["a", [1, 2]]),
    (["only"], [["only"]]),
    ([], [[]]),
])
def test_split_prompts(prompt: Any, expected: list[Any]) -> None:
    assert split_prompts(prompt) == expected


@pytest.mark.parametrize("bad", [3, True])
def test_split_prompts_rejects_other_shapes(bad: Any) -> None:
    with pytest.raises(ParamError, match="prompt"):
        split_prompts(bad)


def test_the_object_form_is_its_prompt_string(vocab: native.Vocab) -> None:
    """llama-server's {"prompt_string": ...} prompt, alone or among other prompts."""
    assert split_prompts({"prompt_string": "Hi"}) == [{"prompt_string": "Hi"}]
    assert split_prompts(["a", {"prompt_string": "b"}]) == ["a", {"prompt_string": "b"}]
    assert tokenize_prompt({"prompt_string": "Hi"}, vocab) == tokenize_prompt("Hi", vocab)
    assert tokenize_prompt({"prompt_string": [15, "x"]}, vocab) == \
        tokenize_prompt([15, "x"], vocab)
    for bad, message in (({"text": "x"}, "prompt string"), ({"prompt_string": 5}, "prompt"),
                         ({"prompt_string": "x", "multimodal_data": ["AAAA"]}, "Multimodal")):
        with pytest.raises(ParamError, match=message):
            tokenize_prompt(bad, vocab)


def test_tokenize_string_prompt_adds_bos(vocab: native.Vocab) -> None:
    tokens = tokenize_prompt("Hello world", vocab)
    assert tokens[0] == vocab.bos
    assert tokens[1:] == vocab.tokenize("Hello world", add_special=False)


def test_tokenize_token_prompt_is_used_as_is(vocab: native.Vocab) -> None:
    assert tokenize_prompt([15, 16.0, 17], vocab) == [15, 16, 17]  # JSON numbers may be floats


def test_tokenize_mixed_prompt(vocab: native.Vocab) -> None:
    text = vocab.tokenize(" there", add_special=False)
    assert tokenize_prompt([9906, " there", 0], vocab) == [9906, *text, 0]
    # BOS only when the prompt starts with text, as llama-server does.
    assert tokenize_prompt(["Hi", 0], vocab)[0] == vocab.bos


def test_tokenize_parses_special_tokens(vocab: native.Vocab) -> None:
    tokens = tokenize_prompt("<|eot_id|>", vocab)
    assert tokens == [vocab.bos, vocab.eot]


@pytest.mark.parametrize("bad", [[1, 2.5], [-1], [10**9], [1, None], [[1]], 7])
def test_tokenize_rejects_bad_prompt_elements(vocab: native.Vocab, bad: Any) -> None:
    with pytest.raises(ParamError):
        tokenize_prompt(bad, vocab)


def test_token_outside_vocabulary_message(vocab: native.Vocab) -> None:
    with pytest.raises(ParamError, match="outside the vocabulary"):
        tokenize_prompt([vocab.n_tokens], vocab)


_JSON = st.recursive(
    st.none() | st.booleans() | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**53), 2**53),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=5), inner,
                                                                  max_size=4),
    max_leaves=30)


def _reads_as_message_to_dict(value: Any) -> None:
    req = completion_pb2.CompletionRequest()
    json_format.ParseDict(value, req.prompt)
    got, want = value_to_json(req, "prompt"), json_format.MessageToDict(req.prompt)
    assert got == want and repr(got) == repr(want)  # same types too (floats stay floats)


@given(_JSON)
def test_value_to_json_reads_a_value_as_message_to_dict_does(value: Any) -> None:
    _reads_as_message_to_dict(value)


# Long lists of numbers are read from their wire form: every shape around that fast path.
_LONG_NUMBERS = st.lists(
    st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**53), 2**53)
    | st.sampled_from([0, -0.0, 1, 128255, 128256, 2.5]), min_size=60, max_size=130)


@given(_LONG_NUMBERS, st.none() | st.sampled_from(["x", None, True, [1], {"a": 1}]),
       st.integers(0, 129))
def test_long_number_lists_read_as_message_to_dict_does(numbers: list[Any], odd: Any,
                                                        where: int) -> None:
    value = list(numbers)
    if odd is not None or where % 2:  # sometimes one element that is not a plain number
        value.insert(min(where, len(value)), odd)
    _reads_as_message_to_dict(value)


def test_long_list_of_huge_numbers_reads_as_message_to_dict_does() -> None:
    _reads_as_message_to_dict([1.5e308] * 70)  # finite, though their sum is not


@pytest.mark.parametrize("number", [math.inf, -math.inf, math.nan])
def test_long_number_list_with_a_non_finite_number_is_refused(number: float) -> None:
    req = request(prompt=list(range(100)))
    req.prompt.list_value.values[57].number_value = number
    with pytest.raises(ValueError, match=r"Value\.number_value"):
        value_to_json(req, "prompt")


def _general(req: Any, vocab: native.Vocab) -> list[list[int]] | str:
    try:
        return [tokenize_prompt(p, vocab) for p in split_prompts(prompt_json(req))]
    except (ParamError, ValueError) as e:
        return f"error: {e}"


_TOKEN_PROMPTS = st.one_of(
    # Long enough for the wire-form reading, sometimes with one element it must refuse.
    st.tuples(st.lists(st.integers(0, 128255), min_size=64, max_size=200),
              st.none() | st.sampled_from([-1, 128256, 2.5, 3.0, True, "hi"]),
              st.integers(0, 200)).map(
        lambda t: {"prompt": t[0] if t[1] is None else
                   [*t[0][:t[2]], t[1], *t[0][t[2]:]]}),
    st.lists(st.integers(-2, 128300) | st.sampled_from([2.5, 7.0, True, "hi"]), min_size=1,
             max_size=100).map(lambda p: {"prompt": p}),
    st.lists(st.lists(st.lists(st.integers(-1, 128300), max_size=40).map(
        lambda ids: {"tokens": {"ids": ids}}) | st.just({"text": "a b"}), max_size=3).map(
        lambda pieces: {"pieces": pieces}), max_size=3).map(
        lambda prompts: {"typed_prompt": {"prompts": prompts}}),
)


@given(_TOKEN_PROMPTS)
def test_token_prompts_agree_with_the_general_path(vocab: native.Vocab,
                                                   body: dict[str, Any]) -> None:
    req = request(**body)
    fast = token_prompts(req, vocab.n_tokens)
    # Where the fast path answers, the general path gives the same tokens; where it does not,
    # the general path reads the prompt (or refuses it) as before.
    if fast is not None:
        assert fast == _general(req, vocab)
        assert all(type(t) is int for p in fast for t in p)


def test_token_prompts_takes_long_valid_token_lists(vocab: native.Vocab) -> None:
    ids = list(range(1000, 1100))
    assert token_prompts(request(prompt=ids), vocab.n_tokens) == [ids]
    assert token_prompts(request(prompt=ids[:10]), vocab.n_tokens) is None  # short: not worth it
    assert token_prompts(request(prompt=[*ids, vocab.n_tokens]), vocab.n_tokens) is None
    assert token_prompts(request(prompt=[*ids, 2.5]), vocab.n_tokens) is None
    typed = {"prompts": [{"pieces": [{"tokens": {"ids": ids[:5]}}, {"tokens": {"ids": [7]}}]},
                         {"pieces": [{"tokens": {"ids": [9]}}]}]}
    assert token_prompts(request(typed_prompt=typed), vocab.n_tokens) == [[*ids[:5], 7], [9]]


@pytest.mark.parametrize("number", [math.inf, -math.inf, math.nan])
def test_value_to_json_refuses_non_finite_numbers_as_message_to_dict_does(number: float) -> None:
    req = completion_pb2.CompletionRequest(prompt=struct_pb2.Value(number_value=number))
    with pytest.raises(ValueError, match=r"Value\.number_value"):
        json_format.MessageToDict(req.prompt)
    with pytest.raises(ValueError, match=r"Value\.number_value"):
        value_to_json(req, "prompt")


def test_prompt_json_from_typed_prompt() -> None:
    req = request(typed_prompt={"prompts": [
        {"pieces": [{"text": "a"}, {"tokens": {"ids": [5, 6]}}]},
        {"pieces": [{"tokens": {"ids": [7]}}]},
    ]})
    assert prompt_json(req) == [["a", 5, 6], [7]]
    one = request(typed_prompt={"prompts": [{"pieces": [{"text": "a"}]}]})
    assert prompt_json(one) == ["a"]
    assert prompt_json(request(prompt=[1, "x"])) == [1.0, "x"]


@pytest.mark.parametrize("req", [
    completion_pb2.CompletionRequest(),  # no prompt at all
    request(prompt=None),  # JSON null
    completion_pb2.CompletionRequest(prompt={}),  # a Value with no kind set
], ids=["absent", "null", "empty-value"])
def test_prompt_json_requires_a_prompt(req: Any) -> None:
    with pytest.raises(ParamError, match='"prompt" must be provided'):
        prompt_json(req)


# -- logit_bias ---------------------------------------------------------------------------------
def test_logit_bias_pairs(vocab: native.Vocab) -> None:
    hello = vocab.tokenize("Hello", add_special=False)
    assert parse_logit_bias([[15043, 1.0], ["Hello", -0.5]], vocab) == (
        (15043, 1.0), *((t, -0.5) for t in hello))


def test_logit_bias_map_with_id_and_string_keys(vocab: native.Vocab) -> None:
    hello = vocab.tokenize("Hello", add_special=False)
    assert dict(parse_logit_bias({"15043": 2.0, "Hello": -1.0}, vocab)) == {
        15043: 2.0, **{t: -1.0 for t in hello}}


def test_logit_bias_false_bans(vocab: native.Vocab) -> None:
    assert parse_logit_bias([[42, False]], vocab) == ((42, -math.inf),)
    assert parse_logit_bias({"42": False}, vocab) == ((42, -math.inf),)


def test_logit_bias_later_entry_wins(vocab: native.Vocab) -> None:
    assert parse_logit_bias([[42, 1.0], [42, 3.0]], vocab) == ((42, 3.0),)


def test_logit_bias_none_or_empty(vocab: native.Vocab) -> None:
    assert parse_logit_bias(None, vocab) == ()
    assert parse_logit_bias([], vocab) == ()
    assert parse_logit_bias({}, vocab) == ()


@pytest.mark.parametrize("bad", [
    [[1]], [[1, 2, 3]], [5], "x", [[1, True]], [[1, "2"]], [[1, math.nan]], [[None, 1.0]],
    [[10**9, 1.0]], [[-1, 1.0]],
])
def test_logit_bias_rejects_malformed(vocab: native.Vocab, bad: Any) -> None:
    with pytest.raises(ParamError):
        parse_logit_bias(bad, vocab)


@pytest.mark.parametrize("key", ["999999999", "-1"])
def test_logit_bias_map_numeric_key_outside_vocabulary_is_rejected(vocab: native.Vocab,
                                                                   key: str) -> None:
    # A numeric key is a token id (as in llama-server's strtol check), never text to tokenize:
    # biasing the tokens of the digits instead would silently change another token's odds.
    with pytest.raises(ParamError, match="outside the vocabulary"):
        parse_logit_bias({key: 1.0}, vocab)


# -- stop -----------------------------------------------------------------------------------
def test_parse_stop() -> None:
    assert parse_stop(None) == ()
    assert parse_stop("x") == ("x",)
    assert parse_stop(["a", "b"]) == ("a", "b")
    with pytest.raises(ParamError):
        parse_stop([1])
    # Neither a string nor a list: left out, as llama-server leaves it out.
    assert parse_stop({"a": 1}) == () and parse_stop(5) == ()


# -- request -> parameters -------------------------------------------------------------------
def test_unset_fields_take_the_server_defaults(vocab: native.Vocab) -> None:
    defaults = CompletionParams(n_predict=7, sampling=SamplingParams(temperature=0.3, top_k=5))
    p = completion_params(request(prompt="x"), Defaults(defaults, 4), vocab)
    assert p.n_predict == 7 and p.sampling.temperature == pytest.approx(0.3)
    assert p.sampling.top_k == 5


def test_set_fields_override_the_defaults(vocab: native.Vocab) -> None:
    req = request(prompt="x", temperature=0.0, top_k=0, n_predict=3, stop=["\n"],
                  samplers=["top_k", "temperature"], dry_sequence_breakers=["|"],
                  logit_bias=[[5, False]], seed=4294967295, id_slot=2, n_probs=3,
                  post_sampling_probs=True, cache_prompt=False)
    p = completion_params(req, Defaults(CompletionParams(), 4), vocab)
    assert (p.n_predict, p.stop, p.id_slot, p.n_probs) == (3, ("\n",), 2, 3)
    assert p.post_sampling_probs and not p.cache_prompt
    s = p.sampling
    assert (s.temperature, s.top_k, s.seed) == (0.0, 0, 4294967295)
    assert s.samplers == ("top_k", "temperature")
    assert s.dry_sequence_breakers == ("|",)
    assert s.logit_bias == ((5, -math.inf),)


def test_n_predict_wins_over_max_tokens(vocab: native.Vocab) -> None:
    none = Defaults(CompletionParams(), 1)
    both = completion_params(request(prompt="x", n_predict=3, max_tokens=9), none, vocab)
    only_max = completion_params(request(prompt="x", max_tokens=9), none, vocab)
    assert (both.n_predict, only_max.n_predict) == (3, 9)


def test_chat_logprobs_counts_as_llama_server(vocab: native.Vocab) -> None:
    def n_probs(**body: Any) -> int:
        req = json_format.ParseDict({"messages": [], **body}, chat_pb2.ChatCompletionRequest())
        return completion_params(req, Defaults(CompletionParams(), 1), vocab).n_probs

    assert n_probs(logprobs=True, top_logprobs=3) == 3
    assert n_probs(logprobs=True) == 20  # its default count
    assert n_probs(logprobs=False) == 0 and n_probs() == 0
    for body in ({"top_logprobs": 2}, {"logprobs": False, "top_logprobs": 2}):
        with pytest.raises(ParamError, match="top_logprobs requires logprobs"):
            n_probs(**body)


def test_max_completion_tokens_wins_over_max_tokens(vocab: native.Vocab) -> None:
    """llama-server's alias order: n_predict, then max_completion_tokens, then max_tokens."""
    req = json_format.ParseDict({"messages": [], "max_tokens": 4, "max_completion_tokens": 2},
                                chat_pb2.ChatCompletionRequest())
    assert completion_params(req, Defaults(CompletionParams(), 1), vocab).n_predict == 2


@pytest.mark.parametrize(("asked", "cap", "used"), [
    (None, -1, -1), (None, 7, 7), (3, 7, 3), (10, 7, 10), (-1, 7, 7), (10, -1, 10),
])
def test_n_predict_is_the_requests_else_the_servers(vocab: native.Vocab, asked: int | None,
                                                    cap: int, used: int) -> None:
    """The request's n_predict takes priority over the server's -n, above it too (the pinned
    llama-server's rule); unset or -1, -n applies. generation_settings reports the value used."""
    body = {"prompt": "x"} if asked is None else {"prompt": "x", "n_predict": asked}
    p = completion_params(request(**body), Defaults(CompletionParams(n_predict=cap), 1), vocab)
    assert p.n_predict == used


@pytest.mark.parametrize(("field", "value", "low"), [
    ("n_predict", -2, -1), ("max_tokens", -5, -1), ("n_cache_reuse", -1, 0),
    ("n_keep", -2, -1), ("n_indent", -1, 0), ("n_discard", -1, 0), ("t_max_predict_ms", -2, -1),
    ("repeat_last_n", -1, 0), ("dry_penalty_last_n", -1, 0), ("dry_allowed_length", -1, 0),
    ("min_keep", -1, 0),
])
def test_llama_servers_hard_limits_are_refused_in_its_words(vocab: native.Vocab, field: str,
                                                            value: int, low: int) -> None:
    with pytest.raises(ParamError, match=f"Field '{field}': Value must be between {low} <= "
                                         f"value <= .*, but got {value}"):
        completion_params(request(prompt="x", **{field: value}), Defaults(CompletionParams(), 1),
                          vocab)


@pytest.mark.parametrize(("field", "value", "used"), [
    ("top_k", -1, 0), ("top_p", 1.5, 1.0), ("top_p", -0.1, 0.0), ("min_p", -1.0, 0.0),
    ("xtc_probability", 2.0, 1.0), ("xtc_threshold", -1.0, 0.0), ("temperature", -1.0, 0.0),
    ("mirostat", 5, 2), ("typical_p", 0.0, 0.0), ("dry_base", 0.5, 1.75),
    ("samplers", ["k", "top-k", "nonsense", "TEMP"], ("top_k", "temperature")),
])
def test_llama_servers_soft_limits_bring_values_into_range(vocab: native.Vocab, field: str,
                                                           value: Any, used: Any) -> None:
    p = completion_params(request(prompt="x", **{field: value}), Defaults(CompletionParams(), 1),
                          vocab)
    assert getattr(p.sampling, field) == used


def test_t_max_predict_ms_minus_one_is_off(vocab: native.Vocab) -> None:
    p = completion_params(request(prompt="x", t_max_predict_ms=-1),
                          Defaults(CompletionParams(), 1), vocab)
    assert p.t_max_predict_ms == 0


@pytest.mark.parametrize("name", ["n", "n_cmpl"])
def test_choices_per_prompt_are_one_to_the_slot_count(name: str) -> None:
    assert choices_of(request(prompt="x"), 2) == 1
    assert choices_of(request(prompt="x", **{name: 2}), 2) == 2
    for bad in (0, 3, -1):
        with pytest.raises(ParamError, match=f"{name} must be between 1 and 2"):
            choices_of(request(prompt="x", **{name: bad}), 2)


def test_json_schema_becomes_a_grammar(vocab: native.Vocab) -> None:
    params = completion_params(request(prompt="x", json_schema={"type": "boolean"}),
                               Defaults(CompletionParams(), 1), vocab)
    assert params.sampling.grammar.startswith("root ::=")
    with pytest.raises(ParamError, match="both json_schema and grammar"):
        completion_params(request(prompt="x", json_schema={}, grammar='root ::= "a"'),
                          Defaults(CompletionParams(), 1), vocab)


# -- validation ------------------------------------------------------------------------------
@pytest.mark.parametrize(("field", "value", "message"), [
    ("top_p", 2.0, "top_p"), ("min_p", -0.1, "min_p"), ("xtc_probability", 1.5, "xtc"),
    ("top_k", -5, "top_k"), ("repeat_last_n", -2, "repeat"),
    ("dry_penalty_last_n", -3, "dry_penalty"), ("dry_allowed_length", -1, "dry_allowed"),
    ("repeat_penalty", -1.0, "repeat_penalty"), ("mirostat", 3, "mirostat"),
    ("min_keep", -1, "min_keep"), ("seed", -2, "seed"), ("seed", 1 << 33, "seed"),
    ("temperature", math.inf, "finite"), ("top_p", math.nan, "finite"),
    ("samplers", ("top_k", "warp_drive"), "unknown sampler"),
])
def test_sampling_validation(field: str, value: Any, message: str) -> None:
    with pytest.raises(ParamError, match=message):
        replace(SamplingParams(), **{field: value}).validate()


@pytest.mark.parametrize(("field", "value", "message"), [
    ("n_predict", -3, "n_predict"), ("n_keep", -2, "n_keep"), ("n_probs", 1000, "n_probs"),
    ("n_probs", -1, "n_probs"), ("t_max_predict_ms", -1, "t_max_predict_ms"),
    ("id_slot", 4, "id_slot"), ("id_slot", 99, "id_slot"), ("id_slot", -2, "id_slot"),
    ("n_indent", -1, "n_indent"), ("stop", tuple("x" * 65), "stop"),
])
def test_completion_validation(field: str, value: Any, message: str) -> None:
    with pytest.raises(ParamError, match=message):
        replace(CompletionParams(), **{field: value}).validate(n_slots=4)


def test_defaults_and_edge_values_are_valid() -> None:
    CompletionParams().validate(n_slots=1)
    ok = replace(SamplingParams(), top_p=1.0, min_p=0.0, top_k=-1, temperature=-1.0,
                 repeat_last_n=-1, seed=0xFFFFFFFF, mirostat=2, samplers=())
    replace(CompletionParams(), n_predict=-1, n_keep=-1, n_probs=100, id_slot=3,
            sampling=ok).validate(n_slots=4)


@pytest.mark.parametrize(("name", "canonical"), [
    ("top_k", "top_k"), ("top-k", "top_k"), ("topk", "top_k"), ("TEMP", "temperature"),
    ("typical_p", "typ_p"), ("nucleus", "top_p"), (" min_p ", "min_p"),
])
def test_sampler_aliases(name: str, canonical: str) -> None:
    assert canonical_sampler(name) == canonical
