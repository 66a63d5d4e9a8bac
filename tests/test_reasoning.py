"""Reasoning text split from the answer (service.reasoning through service.chat_parse): each
reasoning_format, templates that open the block themselves, every split of the text."""

from __future__ import annotations

import pytest

from service.chat_parse import ChatParseConfig, ChatParser, parse_whole
from service.chat_parse_core import ParsedMessage
from service.chat_parse_formats import COMMAND_R7B, CONTENT_ONLY, HERMES
from service.engine.params import ParamError
from service.reasoning import check_reasoning_format, opens_thinking

ANSWER = "<think>\nLet me think: 2 + 2.\n</think>\n\nIt is 4."
QWEN3_WS = ("\n", "\n\n")  # the whitespace Qwen3's template writes after its thinking tags


def _pieces(config: ChatParseConfig, pieces: list[str]) -> ParsedMessage:
    parser = ChatParser(config)
    acc = ParsedMessage()
    for p in pieces:
        acc.add(parser.feed(p))
    acc.add(parser.finish())
    return acc


def _all_splits(config: ChatParseConfig, text: str, expected: ParsedMessage) -> None:
    assert parse_whole(config, text) == expected
    assert _pieces(config, list(text)) == expected
    for cut in range(1, len(text)):
        assert _pieces(config, [text[:cut], text[cut:]]) == expected, cut


@pytest.mark.parametrize("fmt", ["deepseek", "auto"])
def test_think_block_moves_to_reasoning(fmt: str) -> None:
    _all_splits(ChatParseConfig(reasoning=fmt, thinking_ws=QWEN3_WS), ANSWER,
                ParsedMessage("It is 4.", "Let me think: 2 + 2.\n"))


def test_none_keeps_the_text_as_generated() -> None:
    _all_splits(ChatParseConfig(reasoning="none"), ANSWER, ParsedMessage(ANSWER))


def test_legacy_keeps_the_block_in_content_too() -> None:
    msg = parse_whole(ChatParseConfig(reasoning="deepseek-legacy", thinking_ws=QWEN3_WS), ANSWER)
    assert msg.reasoning == "Let me think: 2 + 2.\n"
    assert msg.content == "<think>Let me think: 2 + 2.\n</think>It is 4."


def test_template_that_opens_the_block() -> None:
    config = ChatParseConfig(reasoning="deepseek", thinking_opened=True)
    _all_splits(config, "Hmm, 2 + 2.</think>It is 4.", ParsedMessage("It is 4.", "Hmm, 2 + 2."))


def test_unclosed_block_is_all_reasoning() -> None:
    _all_splits(ChatParseConfig(reasoning="deepseek"), "<think>still thinking",
                ParsedMessage("", "still thinking"))


def test_think_later_in_the_answer_is_content() -> None:
    text = "Answer first <think>x</think>"
    _all_splits(ChatParseConfig(reasoning="deepseek"), text, ParsedMessage(text))


def test_command_r7b_tags() -> None:
    _all_splits(ChatParseConfig(COMMAND_R7B, reasoning="deepseek"),
                "<|START_THINKING|>plan<|END_THINKING|><|START_RESPONSE|>Done.<|END_RESPONSE|>",
                ParsedMessage("Done.", "plan"))


def test_reasoning_then_tool_call() -> None:
    text = '<think>call it</think>\n<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>'
    msg = parse_whole(ChatParseConfig(HERMES, reasoning="deepseek"), text)
    assert msg.reasoning == "call it" and msg.content == ""
    assert [(c.name, c.arguments) for c in msg.tool_calls] == [("f", '{"a": 1}')]


def test_opens_thinking() -> None:
    assert opens_thinking("<｜Assistant｜><think>\n", "<think>", "</think>")
    assert not opens_thinking("<｜Assistant｜><think>\n</think>", "<think>", "</think>")
    assert not opens_thinking("<|im_start|>assistant\n", "<think>", "</think>")


def test_unknown_reasoning_format_is_refused() -> None:
    assert check_reasoning_format("deepseek") == "deepseek"
    with pytest.raises(ParamError, match="reasoning_format"):
        check_reasoning_format("bogus")
    assert ChatParseConfig(CONTENT_ONLY, "none").active is False


def test_prefix_is_parsed_as_the_start_of_the_answer() -> None:
    config = ChatParseConfig(reasoning="deepseek", prefix="<think>\n", thinking_ws=QWEN3_WS)
    _all_splits(config, "plan</think>done", ParsedMessage("done", "plan"))
    assert config.active and ChatParseConfig(prefix="Sure: ").active


def test_plain_content_after_a_thinking_templates_prompt_loses_its_leading_whitespace() -> None:
    """llama-server's parser skips whitespace between the prompt and an answer that may open
    a thinking block (its `<<`), whether or not the block comes; not at the end."""
    _all_splits(ChatParseConfig(reasoning="auto"), "\n  Hello ", ParsedMessage("Hello "))
