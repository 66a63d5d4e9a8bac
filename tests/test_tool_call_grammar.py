"""Grammars forcing tool calls (service.tool_call_grammar), run by llama.cpp's own grammar
sampler: each format's grammar parses, accepts that format's call text (which our parser reads
back as the call) and refuses a call of another tool or with arguments off the schema."""

from __future__ import annotations

import pytest
from grammar_harness import GrammarRunner

from service.chat_parse import ChatParseConfig, parse_whole
from service.chat_parse_formats import (
    COMMAND_R7B,
    DEEPSEEK_R1,
    FIREFUNCTION_V2,
    FUNCTIONARY_V31,
    FUNCTIONARY_V32,
    GENERIC,
    HERMES,
    LLAMA3,
    LLAMA3_BUILTIN,
    MISTRAL_NEMO,
)
from service.engine.params import ParamError
from service.tool_call_grammar import ToolDef, tool_call_grammar, tool_defs

pytestmark = pytest.mark.slow  # llama.cpp replays each text token by token

ARGS = '{"city": "Paris", "days": 3}'
TOOLS = [ToolDef("get_weather", {"type": "object", "properties": {
    "city": {"type": "string", "enum": ["Paris", "Rome"]},
    "days": {"type": "integer", "minimum": 1, "maximum": 9}}, "required": ["city", "days"]}),
    ToolDef("now", {"type": "object", "properties": {}})]
DS = {k: f"<\uff5c{k.replace('_', chr(0x2581))}\uff5c>" for k in
      ("tool_calls_begin", "tool_calls_end", "tool_call_begin", "tool_call_end", "tool_sep")}

CALL_TEXT = {
    HERMES: f'<tool_call>\n{{"name": "get_weather", "arguments": {ARGS}}}\n</tool_call>',
    LLAMA3: f'{{"name": "get_weather", "parameters": {ARGS}}}',
    FUNCTIONARY_V31: f"<function=get_weather>{ARGS}</function>",
    FUNCTIONARY_V32: f"get_weather\n{ARGS}",
    MISTRAL_NEMO: f'[TOOL_CALLS][{{"name": "get_weather", "arguments": {ARGS}}}]',
    FIREFUNCTION_V2: f' functools[{{"name": "get_weather", "arguments": {ARGS}}}]',
    COMMAND_R7B: '<|START_ACTION|>[{"tool_call_id": "0", "tool_name": "get_weather", '
                 f'"parameters": {ARGS}}}]<|END_ACTION|>',
    DEEPSEEK_R1: f"{DS['tool_calls_begin']}{DS['tool_call_begin']}function{DS['tool_sep']}"
                 f"get_weather\n```json\n{ARGS}\n```{DS['tool_call_end']}{DS['tool_calls_end']}",
    GENERIC: f'{{"tool_calls": [{{"name": "get_weather", "arguments": {ARGS}}}]}}',
}


@pytest.mark.parametrize("fmt", sorted(CALL_TEXT))
def test_format_grammar_accepts_its_call(runner: GrammarRunner, fmt: str) -> None:
    grammar = tool_call_grammar(fmt, TOOLS, parallel=True)
    assert runner.parses(grammar)
    text = CALL_TEXT[fmt]
    assert runner.accepts(grammar, text)
    assert not runner.accepts(grammar, text.replace('"days": 3', '"days": 30'))
    assert not runner.accepts(grammar, text.replace("get_weather", "get_news"))
    msg = parse_whole(ChatParseConfig(fmt), text)
    assert [(c.name, c.arguments) for c in msg.tool_calls] == [("get_weather", ARGS)]


def test_named_function_only(runner: GrammarRunner) -> None:
    grammar = tool_call_grammar(HERMES, TOOLS[1:], parallel=False)
    assert not runner.accepts(grammar, CALL_TEXT[HERMES])
    assert runner.accepts(grammar, '<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>')


def test_generic_auto_allows_a_response(runner: GrammarRunner) -> None:
    grammar = tool_call_grammar(GENERIC, TOOLS, parallel=False, allow_response=True)
    assert runner.accepts(grammar, '{"response": "Hello \\"there\\""}')
    assert runner.accepts(grammar, '{"tool_call": {"name": "now", "arguments": {}}}')
    assert not runner.accepts(grammar, "Hello")


def test_forced_prefix(runner: GrammarRunner) -> None:
    grammar = tool_call_grammar(HERMES, TOOLS, parallel=False, prefix="</think>\n\n")
    assert runner.accepts(grammar, "</think>\n\n" + CALL_TEXT[HERMES])


def test_bad_schema_names_the_tool() -> None:
    tools = [{"type": "function", "function": {"name": "ok", "parameters": {}}},
             {"type": "function", "function": {"name": "broken", "parameters": {
                 "type": "object", "properties": {"a": {"type": "string",
                                                        "pattern": "([a-z"}}}}}]
    with pytest.raises(ParamError, match="broken"):
        tool_defs(tools)


def test_required_without_tools() -> None:
    with pytest.raises(ParamError, match="no tools"):
        tool_call_grammar(HERMES, [], parallel=False)


def test_lazy_llama31_grammar_takes_a_builtin_call(runner: GrammarRunner) -> None:
    search = ToolDef("brave_search", {"type": "object", "properties": {
        "query": {"type": "string"}, "count": {"type": "integer"}}, "required": ["query"]})
    grammar = tool_call_grammar(LLAMA3_BUILTIN, [*TOOLS, search], parallel=False, lazy=True)
    call = '<|python_tag|>brave_search.call(query="Paris")'
    assert runner.accepts(grammar, call)
    assert runner.accepts(grammar, CALL_TEXT[LLAMA3])
    assert not runner.accepts(grammar, call.replace("query=", "q="))
    assert not runner.accepts(grammar, '<|python_tag|>get_weather.call(city="Paris")')
    msg = parse_whole(ChatParseConfig(LLAMA3_BUILTIN), call)
    assert [(c.name, c.arguments) for c in msg.tool_calls] == [
        ("brave_search", '{"query": "Paris"}')]
    # without the lazy grammar's builtin calls: the JSON calls only
    assert not runner.accepts(tool_call_grammar(LLAMA3_BUILTIN, [search], parallel=False), call)


def test_lazy_llama3_grammar_takes_what_its_trigger_takes(runner: GrammarRunner) -> None:
    grammar = tool_call_grammar(LLAMA3, TOOLS, parallel=False, lazy=True)
    loose = (f'{{ "type": "function", "name": "get_weather", "arguments": {ARGS} }}',
             f'{{\n  "name": "get_weather",\n  "parameters": {ARGS}}}')
    for text in (CALL_TEXT[LLAMA3], *loose):
        assert runner.accepts(grammar, text)
        msg = parse_whole(ChatParseConfig(LLAMA3), text)
        assert [(c.name, c.arguments) for c in msg.tool_calls] == [("get_weather", ARGS)]
    assert not runner.accepts(grammar, CALL_TEXT[LLAMA3].replace('"days": 3', '"days": 30'))
