"""A chat answer held to a JSON schema, in llama-server's frame (service.json_schema_answer): the
grammar (checked by llama.cpp's own grammar sampler), the content taken out of the frame
whatever the split of the text, and the whole path over gRPC on the tiny model."""

from __future__ import annotations

import json
from typing import Any

import pytest
from grammar_harness import GrammarRunner
from grpc_harness import GREEDY, chat_request

from service import gbnf
from service.json_schema_answer import JsonAnswerText, chat_answer_grammar
from service.json_schema_grammar import json_object_grammar, schema_to_grammar

POINT = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


# -- the grammar ----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("text,accepted", [
    ('{"a":1}', True),
    ('  {"a":1} ', True),
    ('\n\n{"a":1}\n', True),
    ('```json{"a":1}```', True),
    ('```json\n{"a": 1}\n```', True),
    (' \n  ```json\n  {"a":1}\n  ```', True),
    ('```json\n{"a":1}', False),  # an opened fence must close
    ('{"a":1}```', False),
    ('```{"a":1}```', False),  # the fence says json
    ('```json\n{"a":1}\n``` ', False),  # nothing after the closing fence
    ('{"b":1}', False),
])
def test_the_frame_allows_llama_servers_whitespace_and_fence(runner: GrammarRunner, text: str,
                                                             accepted: bool) -> None:
    assert runner.accepts(chat_answer_grammar(schema_to_grammar(POINT)), text) == accepted


def test_the_schemas_root_is_renamed_everywhere_and_apart_from_its_rules() -> None:
    recursive = {"type": "object", "properties": {
        "response-format": {"type": "array", "maxItems": 2}, "next": {"$ref": "#"}}}
    grammar = chat_answer_grammar(schema_to_grammar(recursive))
    rules = gbnf.rule_names(grammar)
    assert grammar.startswith("root ::= space space ")
    assert "response-format" in rules and "response-format1" in rules
    # the $ref "#" now leads to the renamed rule, never back to the frame
    assert "next-kv ::= \"\\\"next\\\"\" space \":\" space response-format1\n" in grammar


def test_a_grammar_without_whitespace_gets_the_space_rule(runner: GrammarRunner) -> None:
    grammar = chat_answer_grammar(schema_to_grammar({"type": "integer"}))
    assert grammar.count("space ::=") == 1
    assert runner.accepts(grammar, " 42\n")
    assert runner.parses(chat_answer_grammar(json_object_grammar()))


def test_renaming_leaves_literals_classes_and_comments_alone() -> None:
    grammar = 'root ::= "root" [root] x # root\nx ::= root-x root\n'
    assert gbnf.rename_rule(grammar, "root", "r") == \
        'r ::= "root" [root] x # root\nx ::= root-x r\n'


# -- the content ----------------------------------------------------------------------------
@pytest.mark.parametrize("text,content", [
    ('{"a":1}', '{"a":1}'),
    ('  \n{"a": 1}\n\t ', '{"a": 1}'),
    ('```json\n{"a":1}\n```', '{"a":1}'),
    ('```json{}```', "{}"),
    ('```json\n\n  {"a"\n\t :\n 1 }\n  ```', '{"a"\n\t :\n 1 }'),
    ('"x `y` \\" ```"', '"x `y` \\" ```"'),  # blanks and backticks inside a string stay
    ('```js', ""),  # stopped inside the fence
    ('```json\n{"', '{"'),  # stopped inside the value
    ('```json\n{"a": 1,\n  ', '{"a": 1,\n  '),  # inside an object: its blanks stay
    ('[1, [2] \n', '[1, [2] \n'),
    ('{"a": [1]}\n  ``', '{"a": [1]}'),  # the value done: the rest is the frame's
    ("\n[1, 2]  ", "[1, 2]"),
])
def test_the_content_is_the_value_whatever_the_split(text: str, content: str) -> None:
    for cut in range(len(text) + 1):
        answer = JsonAnswerText()
        got = answer.feed(text[:cut]) + answer.feed(text[cut:]) + answer.finish()
        assert got == content, cut
    answer = JsonAnswerText()
    assert "".join(answer.feed(c) for c in text) + answer.finish() == content


# -- over gRPC ------------------------------------------------------------------------------
def _chat(stub: Any, stream: bool, **fields: Any) -> tuple[str, str]:
    req = chat_request(messages=[{"role": "user", "content": "Hello there"}], stream=stream,
                       **GREEDY, **fields)
    content, finish = "", ""
    for msg in stub.ChatCompletion(req, timeout=60):
        choice = msg.choices[0]
        content += choice.delta.content if stream else choice.message.content
        finish = choice.finish_reason or finish
    return content, finish


@pytest.mark.slow
@pytest.mark.parametrize("fields", [
    {"response_format": {"type": "json_object"}, "max_tokens": 8},
    {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": POINT}},
     "max_tokens": 40},
    {"json_schema": POINT, "max_tokens": 40},
], ids=["json_object", "json_schema", "chat json_schema field"])
def test_chat_content_is_the_json_value_streamed_or_not(grpc_stub: Any,
                                                        fields: dict[str, Any]) -> None:
    """The tiny model's greedy answer starts with the fence (as llama-server's does, same
    model): the content is the bare value, the same streamed as whole."""
    whole, finish = _chat(grpc_stub, False, **fields)
    assert finish == "stop", whole
    value = json.loads(whole)
    assert isinstance(value, dict)
    if "json_object" not in str(fields):
        assert isinstance(value["a"], int)
    assert _chat(grpc_stub, True, **fields) == (whole, finish)


@pytest.mark.slow
@pytest.mark.parametrize("fields,kind", [
    ({"json_schema": {"type": "integer"},
      "response_format": {"type": "json_schema",
                          "json_schema": {"name": "b", "schema": {"type": "boolean"}}}}, bool),
    ({"json_schema": {"type": "integer"}, "response_format": {"type": "json_object"}}, int),
    ({"json_schema": {"type": "integer"},
      "response_format": {"type": "json_object", "schema": {"type": "boolean"}}}, bool),
], ids=["json_schema format wins", "bare json_object keeps json_schema",
        "json_object schema wins"])
def test_response_format_and_json_schema_together_as_llama_server(
        grpc_stub: Any, fields: dict[str, Any], kind: type) -> None:
    content, _ = _chat(grpc_stub, False, max_tokens=40, **fields)
    assert type(json.loads(content)) is kind, content
