"""Typed inputs beside llama-server's polymorphic ones, and the enum companions of the closed
string sets (issue 25, items 3 and 6), over real gRPC on tiny-bpe: each typed form has the
effect of the form it stands for, which form wins when both are set, and the errors."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from grpc_harness import GREEDY, CompletionResult, chat_request, complete, completion_request
from llama.v1 import chat_pb2, completion_pb2, server_pb2, typed_pb2

from api_common import rich_status
from rest_bridge.jsonio import dumps
from rest_bridge.render_openai import ChatRenderer, TextCompletionRenderer
from rest_bridge.sse_frames import frames
from service.engine.params import ParamError
from service.tool_choice import ToolChoice, tool_choice_of
from service.typed_inputs import slot_action_of
from service.typed_outputs import FINISH_REASONS, STOP_TYPES

PROMPT = "The quick brown fox"
# Deterministic: greedy, no penalties, nothing reused from the cache, EOS not an end.
EXACT: dict[str, Any] = {**GREEDY, "repeat_penalty": 1.0, "cache_prompt": False,
                         "ignore_eos": True}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"zeta": {"type": "integer", "minimum": 1}, "alpha": {"type": "string"}},
    "required": ["zeta", "alpha"]}
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def run(stub: Any, n_predict: int = 12, **fields: Any) -> CompletionResult:
    result = complete(stub, prompt=PROMPT, n_predict=n_predict, **{**EXACT, **fields})
    return result


def ok(result: CompletionResult) -> CompletionResult:
    assert result.code == grpc.StatusCode.OK, result.details
    return result


def refused(result: CompletionResult, *words: str) -> None:
    assert result.code == INVALID, (result.code, result.details)
    for word in words:
        assert word in result.details


# -- stop_sequences ---------------------------------------------------------------------------
def test_stop_sequences_stop_generation_like_stop(grpc_stub: Any) -> None:
    free = ok(run(grpc_stub, 24))
    word = free.content[6:9]  # some text the greedy run generates
    assert len(word) == 3
    by_stop = ok(run(grpc_stub, 24, stop=[word]))
    typed = ok(run(grpc_stub, 24, stop_sequences=[word]))
    assert typed.content == by_stop.content == free.content[:free.content.index(word)]
    for r in (by_stop, typed):
        assert r.final.stop_type == "word" and r.final.stopping_word == word
        assert r.final.typed_stop_type == typed_pb2.STOP_TYPE_WORD
    assert list(typed.final.generation_settings.stop) == [word]


def test_stop_and_stop_sequences_together_are_refused(grpc_stub: Any) -> None:
    refused(run(grpc_stub, stop=["a"], stop_sequences=["b"]), "stop_sequences", "stop")


# -- typed logit bias -------------------------------------------------------------------------
def _requested(stub: Any, result: CompletionResult) -> list[tuple[int, float]]:
    """The echoed logit_bias less the end-of-generation bans ignore_eos adds (EXACT sets it):
    what a request without any bias echoes."""
    added = {(e.token, e.bias) for e in ok(run(stub, 1)).final.generation_settings.logit_bias}
    return [(e.token, e.bias) for e in result.final.generation_settings.logit_bias
            if (e.token, e.bias) not in added]


def _same_effect(stub: Any, typed: list[dict[str, Any]], value: Any) -> CompletionResult:
    a, b = ok(run(stub, typed_logit_bias=typed)), ok(run(stub, logit_bias=value))
    assert a.tokens == b.tokens
    assert a.final.generation_settings.logit_bias == b.final.generation_settings.logit_bias
    return a


def test_typed_ban_by_id_equals_the_value_form(grpc_stub: Any) -> None:
    first = ok(run(grpc_stub)).tokens[0]
    banned = _same_effect(grpc_stub, [{"token": first, "ban": True}], [[first, False]])
    assert first not in banned.tokens


def test_typed_bias_by_id_equals_the_value_form(grpc_stub: Any) -> None:
    target = 1000
    biased = _same_effect(grpc_stub, [{"token": target, "bias": 100.0}], [[target, 100.0]])
    assert set(biased.tokens) == {target}
    assert _requested(grpc_stub, biased) == [(target, 100.0)]


def test_typed_bias_and_ban_by_text_equal_the_value_form(grpc_stub: Any) -> None:
    biased = _same_effect(grpc_stub, [{"text": " zebra", "bias": 50.0}], [[" zebra", 50.0]])
    entries = _requested(grpc_stub, biased)
    assert entries and all(bias == 50.0 for _, bias in entries)  # each token of the text
    assert set(biased.tokens) <= {token for token, _ in entries}
    free = ok(run(grpc_stub, n_probs=1))
    piece = next(p.token for m in free.messages for p in m.completion_probabilities)
    banned = _same_effect(grpc_stub, [{"text": piece, "ban": True}], [[piece, False]])
    assert banned.tokens[0] != free.tokens[0]


def test_typed_text_that_looks_like_a_number_is_text(grpc_stub: Any) -> None:
    """The JSON form reads a numeric string key as a token id; typed text is always text."""
    typed = ok(run(grpc_stub, 1, typed_logit_bias=[{"text": "42", "bias": 5.0}]))
    ids = {token for token, _ in _requested(grpc_stub, typed)}
    as_id = ok(run(grpc_stub, 1, logit_bias=[["42", 5.0]]))
    assert {token for token, _ in _requested(grpc_stub, as_id)} == {42}
    assert ids and ids != {42}


@pytest.mark.parametrize(("entries", "words"), [
    ([{"token": 5}], ("typed_logit_bias[0]", "bias or ban")),
    ([{"bias": 1.0}], ("typed_logit_bias[0]", "token or text")),
    ([{"token": 5, "bias": 1.0}, {"token": 6, "ban": False}], ("typed_logit_bias[1]", "ban")),
    ([{"token": 10**9, "bias": 1.0}], ("outside the vocabulary",)),
    ([{"token": 5, "bias": "NaN"}], ("finite",)),
])
def test_bad_typed_logit_bias_is_refused(grpc_stub: Any, entries: list[dict[str, Any]],
                                         words: tuple[str, ...]) -> None:
    refused(run(grpc_stub, typed_logit_bias=entries), *words)


def test_logit_bias_and_typed_logit_bias_together_are_refused(grpc_stub: Any) -> None:
    refused(run(grpc_stub, logit_bias=[[5, 1.0]], typed_logit_bias=[{"token": 5, "bias": 1.0}]),
            "logit_bias", "typed_logit_bias")


@pytest.mark.parametrize(("fields", "field"), [
    ({"stop": ["a"], "stop_sequences": ["b"]}, "stop_sequences"),
    ({"typed_logit_bias": [{"token": 5, "ban": False}]}, "typed_logit_bias[0].ban"),
    ({"typed_logit_bias": [{"token": -1, "bias": 1.0}]}, "typed_logit_bias[0].token"),
    ({"json_schema_json": "{"}, "json_schema_json"),
])
def test_typed_input_errors_name_the_field(grpc_stub: Any, fields: dict[str, Any],
                                           field: str) -> None:
    """The status's BadRequest details name the field at fault (issue 25, item 2)."""
    request = completion_request(prompt=PROMPT, n_predict=1, **fields)
    with pytest.raises(grpc.RpcError) as info:
        list(grpc_stub.Completion(request, timeout=30))
    err: Any = info.value
    assert err.code() == INVALID
    assert rich_status.decode(err).field_violations == [(field, err.details())]


# -- JSON schemas as JSON text ----------------------------------------------------------------
def _grammar(result: CompletionResult) -> str:
    return str(ok(result).final.generation_settings.grammar)


def test_json_schema_json_keeps_key_order_in_the_grammar(grpc_stub: Any) -> None:
    grammar = _grammar(run(grpc_stub, 1, json_schema_json=json.dumps(SCHEMA)))
    assert 0 <= grammar.index("zeta") < grammar.index("alpha")
    reordered = {**SCHEMA, "properties": dict(reversed(SCHEMA["properties"].items())),
                 "required": ["alpha", "zeta"]}
    grammar = _grammar(run(grpc_stub, 1, json_schema_json=json.dumps(reordered)))
    assert 0 <= grammar.index("alpha") < grammar.index("zeta")


def test_json_schema_json_takes_precedence_over_the_struct(grpc_stub: Any) -> None:
    text = _grammar(run(grpc_stub, 1, json_schema_json=json.dumps(SCHEMA)))
    both = _grammar(run(grpc_stub, 1, json_schema_json=json.dumps(SCHEMA),
                        json_schema={"type": "array"}))
    assert both == text
    assert _grammar(run(grpc_stub, 1, json_schema={"type": "array"})) != text


def test_response_format_schema_json_takes_precedence(grpc_stub: Any) -> None:
    """The output follows schema_json, not the Struct beside it (chat messages do not report
    the grammar: the output shows it, the schema's first property first)."""
    fmt = {"type": "json_schema", "json_schema": {
        "name": "x", "schema_json": json.dumps(SCHEMA),
        "schema": {"type": "object", "properties": {"other": {"type": "integer"}},
                   "required": ["other"]}}}
    msgs = _chat(grpc_stub, response_format=fmt, n_predict=12, stream=False)
    content = msgs[-1].choices[0].message.content
    assert content.startswith("{") and '"zeta"' in content and "other" not in content


@pytest.mark.parametrize("text", ["{not json", "[" * 100_000, '"a string"'])
def test_invalid_json_schema_json_is_refused_naming_the_field(grpc_stub: Any,
                                                             text: str) -> None:
    refused(run(grpc_stub, 1, json_schema_json=text), "json_schema_json")


def test_json_schema_json_and_grammar_together_are_refused(grpc_stub: Any) -> None:
    refused(run(grpc_stub, 1, json_schema_json="{}", grammar='root ::= "a"'), "grammar")


# -- tools: parameters_json, tool choice ------------------------------------------------------
def _tool(**function: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": "get_weather", **function}}


def _template(stub: Any, **fields: Any) -> str:
    fields.setdefault("messages", [{"role": "user", "content": "Weather in Paris?"}])
    return str(stub.ApplyTemplate(chat_request(**fields), timeout=30).prompt)


def _template_error(stub: Any, **fields: Any) -> str:
    with pytest.raises(grpc.RpcError) as info:
        _template(stub, **fields)
    err: Any = info.value
    assert err.code() == INVALID, err.details()
    return str(err.details())


def test_parameters_json_keeps_integers_and_key_order_in_the_template(grpc_stub: Any) -> None:
    text = _template(grpc_stub, tools=[_tool(parameters_json=json.dumps(SCHEMA))])
    assert '"minimum": 1' in text and '"minimum": 1.0' not in text
    assert 0 <= text.index('"zeta"') < text.index('"alpha"')
    # The Struct form is why the text form exists: every number in it is a double.
    struct = _template(grpc_stub, tools=[_tool(parameters=SCHEMA)])
    assert '"minimum": 1.0' in struct
    both = _template(grpc_stub, tools=[_tool(parameters={"type": "object"},
                                             parameters_json=json.dumps(SCHEMA))])
    assert both == text


def test_invalid_parameters_json_is_refused_naming_the_field(grpc_stub: Any) -> None:
    assert "parameters_json" in _template_error(grpc_stub,
                                                tools=[_tool(parameters_json="{oops")])


GRAMMAR_WITH_TOOLS = {"tools": [_tool(parameters_json=json.dumps(SCHEMA))],
                      "grammar": 'root ::= "a"'}


@pytest.mark.parametrize(("value", "typed"), [
    ("none", None),
    ("auto", {"mode": "TOOL_CHOICE_MODE_NONE"}),  # the typed form wins
])
def test_tool_choice_none_allows_a_grammar_beside_tools(grpc_stub: Any, value: str,
                                                        typed: Any) -> None:
    fields: dict[str, Any] = {**GRAMMAR_WITH_TOOLS, "tool_choice": value}
    if typed is not None:
        fields["typed_tool_choice"] = typed
    assert _template(grpc_stub, **fields)


@pytest.mark.parametrize(("value", "typed"), [
    (None, None),
    ("none", {"mode": "TOOL_CHOICE_MODE_REQUIRED"}),  # the typed form wins
    (None, {"mode": "TOOL_CHOICE_MODE_AUTO"}),
])
def test_tool_choice_other_than_none_refuses_a_grammar_beside_tools(
        grpc_stub: Any, value: str | None, typed: Any) -> None:
    fields: dict[str, Any] = dict(GRAMMAR_WITH_TOOLS)
    if value is not None:
        fields["tool_choice"] = value
    if typed is not None:
        fields["typed_tool_choice"] = typed
    assert "Cannot use custom grammar constraints with tools" in _template_error(grpc_stub,
                                                                                 **fields)


@pytest.mark.parametrize(("fields", "words"), [
    ({"tool_choice": "sometimes"}, ("Invalid tool_choice",)),
    ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, ("'nope'",)),
    ({"typed_tool_choice": {"mode": "TOOL_CHOICE_MODE_REQUIRED", "function_name": "nope"}},
     ("'nope'",)),
    ({"typed_tool_choice": {"mode": "TOOL_CHOICE_MODE_NONE", "function_name": "get_weather"}},
     ("function_name", "REQUIRED")),
])
def test_bad_tool_choice_is_refused(grpc_stub: Any, fields: dict[str, Any],
                                    words: tuple[str, ...]) -> None:
    details = _template_error(grpc_stub, tools=[_tool()], **fields)
    for word in words:
        assert word in details


@pytest.mark.parametrize(("value", "typed", "expected"), [
    (None, None, ToolChoice("auto")),
    ("none", None, ToolChoice("none")),
    ("required", None, ToolChoice("required")),
    ({"type": "function", "function": {"name": "get_weather"}}, None,
     ToolChoice("required", "get_weather")),
    (None, {"mode": "TOOL_CHOICE_MODE_REQUIRED", "function_name": "get_weather"},
     ToolChoice("required", "get_weather")),
    (None, {}, ToolChoice("auto")),
    ("none", {"mode": "TOOL_CHOICE_MODE_REQUIRED"}, ToolChoice("required")),
])
def test_tool_choice_of_reads_both_forms_alike(value: Any, typed: Any,
                                               expected: ToolChoice) -> None:
    body: dict[str, Any] = {"tools": [_tool()]}
    if value is not None:
        body["tool_choice"] = value
    if typed is not None:
        body["typed_tool_choice"] = typed
    request = json_format.ParseDict(body, chat_pb2.ChatCompletionRequest())
    assert tool_choice_of(request) == expected


# -- roles ------------------------------------------------------------------------------------
def test_typed_role_renders_as_the_role_string(grpc_stub: Any) -> None:
    plain = _template(grpc_stub, messages=[{"role": "system", "content": "Be brief."},
                                           {"role": "user", "content": "Hi"}])
    typed = _template(grpc_stub, messages=[{"typed_role": "ROLE_SYSTEM", "content": "Be brief."},
                                           {"typed_role": "ROLE_USER", "role": "user",
                                            "content": "Hi"}])
    assert typed == plain


def test_disagreeing_role_and_typed_role_are_refused(grpc_stub: Any) -> None:
    details = _template_error(grpc_stub, messages=[
        {"role": "user", "typed_role": "ROLE_ASSISTANT", "content": "Hi"}])
    assert "typed_role" in details and "ROLE_ASSISTANT" in details


@pytest.mark.parametrize(("action", "action_type", "expected"), [
    ("save", 0, "save"),
    ("", typed_pb2.SLOT_ACTION_TYPE_RESTORE, "restore"),
    ("erase", typed_pb2.SLOT_ACTION_TYPE_ERASE, "erase"),
    ("", 0, ""),
])
def test_slot_action_of_reads_both_forms(action: str, action_type: int, expected: str) -> None:
    """For SlotAction (not served yet): the string or its enum companion."""
    request = server_pb2.SlotActionRequest(action=action, action_type=action_type)
    assert slot_action_of(request) == expected


def test_slot_action_and_action_type_must_agree() -> None:
    request = server_pb2.SlotActionRequest(action="save",
                                           action_type=typed_pb2.SLOT_ACTION_TYPE_ERASE)
    with pytest.raises(ParamError, match="SLOT_ACTION_TYPE_ERASE disagree"):
        slot_action_of(request)


# -- enum companions in responses -------------------------------------------------------------
def _chat(stub: Any, **fields: Any) -> list[Any]:
    fields = {**EXACT, "n_predict": 4, **fields}
    fields.setdefault("messages", [{"role": "user", "content": "Hi"}])
    return list(stub.ChatCompletion(chat_request(**fields), timeout=60))


@pytest.mark.parametrize("fields", [{"n_predict": 3}, {"n_predict": 40, "stop": [" "]},
                                    {"n_predict": 40, "ignore_eos": False,
                                     "logit_bias": [[128009, 100.0]]}])
def test_completion_stop_type_has_its_enum(grpc_stub: Any, fields: dict[str, Any]) -> None:
    final = ok(run(grpc_stub, **fields)).final
    assert final.stop_type in ("limit", "word", "eos")
    assert final.typed_stop_type == STOP_TYPES[final.stop_type]


def test_openai_completion_finish_reason_has_its_enum(grpc_stub: Any) -> None:
    request = completion_pb2.CompletionRequest(n_predict=3, temperature=0.0, stream=True)
    request.prompt.string_value = PROMPT
    msgs = list(grpc_stub.OpenAICompletion(request, timeout=60))
    final = msgs[-1]
    assert final.choices[0].finish_reason == "length"
    assert final.choices[0].typed_finish_reason == typed_pb2.FINISH_REASON_LENGTH
    assert final.typed_stop_type == typed_pb2.STOP_TYPE_LIMIT
    assert not any(c.HasField("typed_finish_reason") for m in msgs[:-1] for c in m.choices)


@pytest.mark.parametrize("stream", [True, False])
def test_chat_role_finish_reason_and_stop_type_have_their_enums(grpc_stub: Any,
                                                                stream: bool) -> None:
    msgs = _chat(grpc_stub, stream=stream)
    first, final = msgs[0].choices[0], msgs[-1]
    said = first.delta if stream else first.message
    assert said.role == "assistant" and said.typed_role == typed_pb2.ROLE_ASSISTANT
    choice = final.choices[0]
    assert choice.finish_reason == "length"
    assert choice.typed_finish_reason == FINISH_REASONS["length"]
    assert final.stop_type == "limit" and final.typed_stop_type == typed_pb2.STOP_TYPE_LIMIT
    for m in msgs[1:]:  # unset, not UNSPECIFIED: a transcoder prints nothing for them
        assert not m.choices[0].delta.HasField("typed_role")
    for m in msgs[:-1]:
        assert not m.HasField("typed_stop_type")
        assert not m.choices[0].HasField("typed_finish_reason")


def test_the_rest_bridge_writes_no_enum_companions(grpc_stub: Any) -> None:
    """The bridge renders llama-server's JSON: the strings, never the enums."""
    chat = _chat(grpc_stub)
    renderer = ChatRenderer(chat_request(messages=[]))
    # as the bridge writes them: an event may be its JSON text already (ChatRenderer's text-only
    # chunks)
    text = (b"".join(frames(renderer.events(m)) for m in chat) + dumps(renderer.result(chat))
            ).decode()
    assert '"finish_reason":"length"' in text and '"role":"assistant"' in text
    assert "typed_" not in text and "FINISH_REASON" not in text and "ROLE_" not in text
    request = completion_pb2.CompletionRequest(n_predict=3, temperature=0.0, stream=True)
    request.prompt.string_value = PROMPT
    msgs = list(grpc_stub.OpenAICompletion(request, timeout=60))
    rendered = TextCompletionRenderer()
    text = json.dumps([rendered.events(m) for m in msgs]) + json.dumps(rendered.result(msgs))
    assert '"finish_reason": "length"' in text and "typed_" not in text
