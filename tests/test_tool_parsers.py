"""Tool-call parsing per format (service.chat_parse*): real-looking answers, parsed in one
piece, one character at a time and split at every point, give the same message."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable

import pytest

from service.chat_parse import ChatParseConfig, ChatParser, parse_whole
from service.chat_parse_core import ParsedMessage, ToolCall
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

DS_BEGIN, DS_END = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
DS_CALL, DS_CALL_END, DS_SEP = "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>"
WEATHER = '{"location": "Paris, France", "unit": "celsius", "days": [1, {"x": "}]\\""}]}'


def ids() -> Callable[[], str]:
    counter = itertools.count()
    return lambda: f"call_{next(counter)}"


def calls(*pairs: tuple[str, str]) -> list[ToolCall]:
    return [ToolCall(f"call_{i}", name, args) for i, (name, args) in enumerate(pairs)]


# (format, answer, content, reasoning, calls)
CASES: list[tuple[str, str, str, str, list[ToolCall]]] = [
    (HERMES, f'I will look.\n<tool_call>\n{{"name": "get_weather", "arguments": {WEATHER}}}\n'
     '</tool_call>\n<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>',
     "I will look.\n", "", calls(("get_weather", WEATHER), ("now", "{}"))),
    (HERMES, "<think>\nthe user wants weather\n</think>\n\n<tool_call>\n"
     f'{{"name": "get_weather", "arguments": {WEATHER}}}\n</tool_call>',
     "", "the user wants weather\n", calls(("get_weather", WEATHER))),
    (HERMES, "Plain answer with <b>tags</b> and a <tool_ prefix.",
     "Plain answer with <b>tags</b> and a <tool_ prefix.", "", []),
    (LLAMA3, f'{{"name": "get_weather", "parameters": {WEATHER}}}', "", "",
     calls(("get_weather", WEATHER))),
    (LLAMA3, f'{{"type": "function", "name": "get_weather", "parameters": {WEATHER}}}', "",
     "", calls(("get_weather", WEATHER))),
    (LLAMA3, "Hello {there}", "Hello {there}", "", []),
    (LLAMA3_BUILTIN, '<|python_tag|>brave_search.call(query="weather in Paris")', "", "",
     calls(("brave_search", '{"query": "weather in Paris"}'))),
    (LLAMA3_BUILTIN, '<|python_tag|>wolfram_alpha.call(query="2+2")', "", "",
     calls(("wolfram_alpha", '{"query": "2+2"}'))),
    (LLAMA3_BUILTIN, "<|python_tag|>print(1 + 1)", "", "",
     calls(("code_interpreter", '{"code": "print(1 + 1)"}'))),
    (FUNCTIONARY_V31, f"Checking.<function=get_weather>{WEATHER}</function>", "Checking.",
     "", calls(("get_weather", WEATHER))),
    (FUNCTIONARY_V31, "<|python_tag|>import math\nprint(math.pi)", "", "",
     calls(("python", '{"code": "import math\\nprint(math.pi)"}'))),
    (FUNCTIONARY_V32, f"all\nLet me check.>>>get_weather\n{WEATHER}>>>now\n{{}}",
     "Let me check.", "", calls(("get_weather", WEATHER), ("now", "{}"))),
    (FUNCTIONARY_V32, "all\nJust text, a > b >> c.", "Just text, a > b >> c.", "", []),
    (MISTRAL_NEMO, f'[TOOL_CALLS][{{"name": "get_weather", "arguments": {WEATHER}, '
     '"id": "a1b2c3d4e"}, {"name": "now", "arguments": {}}]', "", "",
     calls(("get_weather", WEATHER), ("now", "{}"))),
    (FIREFUNCTION_V2, f' functools[{{"name": "get_weather", "arguments": {WEATHER}}}]', "",
     "", calls(("get_weather", WEATHER))),
    (COMMAND_R7B, "<|START_THINKING|>I should call the tool.<|END_THINKING|><|START_ACTION|>"
     f'[\n    {{"tool_call_id": "0", "tool_name": "get_weather", "parameters": {WEATHER}}}\n]'
     "<|END_ACTION|>", "", "I should call the tool.", calls(("get_weather", WEATHER))),
    (COMMAND_R7B, "<|START_RESPONSE|>Hello there.<|END_RESPONSE|>", "Hello there.", "", []),
    (DEEPSEEK_R1, f"<think>weather needed</think>\n\nOne moment.{DS_BEGIN}{DS_CALL}function"
     f"{DS_SEP}get_weather\n```json\n{WEATHER}\n```{DS_CALL_END}\n{DS_CALL}function{DS_SEP}now"
     f"\n```json\n{{}}\n```{DS_CALL_END}{DS_END}", "One moment.", "weather needed",
     calls(("get_weather", WEATHER), ("now", "{}"))),
    (GENERIC, f'{{"tool_calls": [{{"name": "get_weather", "arguments": {WEATHER}}}, '
     '{"name": "now", "arguments": {}, "id": "x"}]}', "", "",
     calls(("get_weather", WEATHER), ("now", "{}"))),
    (GENERIC, f'{{"tool_call": {{"name": "get_weather", "arguments": {WEATHER}}}}}', "", "",
     calls(("get_weather", WEATHER))),
    (GENERIC, '{"response": "Hi \\"you\\" \\ud83d\\ude00\\n\\u00e9"}', 'Hi "you" 😀\né', "", []),
    (GENERIC, "not JSON at all", "not JSON at all", "", []),
]


def _by_pieces(config: ChatParseConfig, pieces: list[str]) -> ParsedMessage:
    parser = ChatParser(config, ids())
    acc = ParsedMessage()
    for piece in pieces:
        acc.add(parser.feed(piece))
    acc.add(parser.finish())
    assert acc == parser.message
    return acc


@pytest.mark.parametrize(("fmt", "text", "content", "reasoning", "expected"), CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_one_shot_and_every_split(fmt: str, text: str, content: str, reasoning: str,
                                  expected: list[ToolCall]) -> None:
    # thinking tags written as Qwen3's template writes them (service.thinking_tags)
    config = ChatParseConfig(fmt, reasoning="deepseek", thinking_ws=("\n", "\n\n"))
    whole = parse_whole(config, text, ids())
    assert whole == ParsedMessage(content, reasoning, expected)
    for call in whole.tool_calls:
        json.loads(call.arguments)
    assert _by_pieces(config, list(text)) == whole
    for cut in range(1, len(text)):
        assert _by_pieces(config, [text[:cut], text[cut:]]) == whole, cut


def test_first_delta_of_a_call_names_it_and_later_ones_carry_arguments() -> None:
    text = f'<tool_call>\n{{"name": "get_weather", "arguments": {WEATHER}}}\n</tool_call>'
    parser = ChatParser(ChatParseConfig(HERMES), ids())
    pieces = [d for ch in text for d in parser.feed(ch).tool_calls]
    pieces += parser.finish().tool_calls
    assert pieces[0].id == "call_0" and pieces[0].name == "get_weather"
    assert all(not p.id and not p.name for p in pieces[1:])
    assert "".join(p.arguments for p in pieces) == WEATHER


def test_unfinished_call_keeps_its_arguments_so_far() -> None:
    msg = parse_whole(ChatParseConfig(HERMES), '<tool_call>{"name": "f", "arguments": {"a": 1',
                      ids())
    assert msg.tool_calls == calls(("f", '{"a": 1'))


def test_a_call_header_that_goes_wrong_is_content() -> None:
    text = '<tool_call>{"nam": 1}</tool_call> done'
    assert parse_whole(ChatParseConfig(HERMES), text, ids()) == ParsedMessage(text)


def test_content_only_keeps_everything() -> None:
    text = "<think>x</think><tool_call>{}</tool_call>"
    assert parse_whole(ChatParseConfig(), text) == ParsedMessage(text)


# The spec's table (llama-server README, "Tool call support") for the templates the pinned
# llama.cpp ships, plus the formats it names whose templates ship there too.
TEMPLATE_FORMATS = {
    "CohereForAI-c4ai-command-r-plus-tool_use": GENERIC,
    "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use": HERMES,
    "NousResearch-Hermes-3-Llama-3.1-8B-tool_use": HERMES,
    "Qwen-Qwen2.5-7B-Instruct": HERMES,
    "deepseek-ai-DeepSeek-R1-Distill-Llama-8B": DEEPSEEK_R1,
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B": DEEPSEEK_R1,
    "llama-cpp-deepseek-r1": DEEPSEEK_R1,
    "google-gemma-2-2b-it": GENERIC,
    "meetkai-functionary-medium-v3.1": FUNCTIONARY_V31,
    "meetkai-functionary-medium-v3.2": FUNCTIONARY_V32,
    "meta-llama-Llama-3.1-8B-Instruct": LLAMA3_BUILTIN,
    "meta-llama-Llama-3.2-3B-Instruct": LLAMA3,
    "meta-llama-Llama-3.3-70B-Instruct": LLAMA3_BUILTIN,
    "microsoft-Phi-3.5-mini-instruct": GENERIC,
    "mistralai-Mistral-Nemo-Instruct-2407": MISTRAL_NEMO,
    "fireworks-ai-llama-3-firefunction-v2": FIREFUNCTION_V2,
    "CohereForAI-c4ai-command-r7b-12-2024-tool_use": COMMAND_R7B,
}


@pytest.mark.parametrize(("stem", "fmt"), sorted(TEMPLATE_FORMATS.items()))
def test_template_selects_the_documented_format(stem: str, fmt: str) -> None:
    from native.testmodels.sources import chat_template
    from service.chat_parse_formats import detect_format
    assert detect_format(chat_template(stem)) == fmt


def test_max_calls_keeps_the_first() -> None:
    text = ('<tool_call>{"name": "a", "arguments": {"x": 1}}</tool_call>'
            '<tool_call>{"name": "b", "arguments": {"y": 2}}</tool_call>')
    config = ChatParseConfig(HERMES, max_calls=1)
    assert parse_whole(config, text, ids()).tool_calls == calls(("a", '{"x": 1}'))
    assert _by_pieces(config, list(text)).tool_calls == calls(("a", '{"x": 1}'))
