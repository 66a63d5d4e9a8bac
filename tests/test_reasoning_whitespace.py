"""Whitespace around a thinking block, as llama-server's parser for the template treats it
(issue 16; the differential corpus pins the same rules against llama-server itself, see
tests/differential/corpus_reasoning.py): each rule over every split of the text, so streams
agree with whole answers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest
from llama.v1 import chat_pb2, service_pb2_grpc
from test_reasoning import _all_splits  # every split of a text parses as the whole

from native.paths import source_dir
from service.chat_parse import ChatParseConfig, ChatParser, parse_whole
from service.chat_parse_core import ParsedMessage
from service.chat_template import ChatTemplate
from service.config import load_config
from service.reasoning import opened_lead, thinking_whitespace
from service.server import start_server
from service.thinking_tags import template_thinking_tags

TEMPLATES = source_dir() / "models" / "templates"
QWEN3 = ChatParseConfig(reasoning="auto", thinking_ws=("\n", "\n\n"), skip_space=True)


def test_the_templates_tags_give_the_whitespace_to_skip() -> None:
    qwen3 = ChatTemplate.compile((TEMPLATES / "Qwen-Qwen3-0.6B.jinja").read_text())
    r1 = ChatTemplate.compile((TEMPLATES / "llama-cpp-deepseek-r1.jinja").read_text())
    assert thinking_whitespace(template_thinking_tags(qwen3)) == ("\n", "\n\n")
    assert thinking_whitespace(template_thinking_tags(r1)) == ("", "")
    assert thinking_whitespace(None) == ("", "")
    assert opened_lead("<｜Assistant｜><think>\n", "<think>") == "\n"


@pytest.mark.parametrize(("text", "content", "reasoning"), [
    ("<think>\nabc\n</think> shop", " shop", "abc\n"),  # not the template's whitespace: kept
    ("<think>\nabc\n</think>\n\n shop", " shop", "abc\n"),
    ("<think>\nabc\n</think>\n\n\n shop", "\n shop", "abc\n"),  # two newlines at most
    ("<think>\nabc\n</think>\n shop", " shop", "abc\n"),  # each newline optional
    ("<think> \n abc \n </think>  shop  ", "  shop  ", " \n abc \n "),
    ("<think>\nabc\n</think> ", " ", "abc\n"),
    ("<think>\n\n</think>\n\nshop", "shop", ""),  # whitespace-only reasoning dropped
    ("  <think>\nabc</think>x", "x", "abc"),
    ("  hello ", "hello ", ""),  # whitespace before the answer skipped
    ("<think>\n  still", "", "  still"),
])
def test_qwen3_whitespace(text: str, content: str, reasoning: str) -> None:
    _all_splits(QWEN3, text, ParsedMessage(content, reasoning))


def test_whitespace_only_reasoning_is_held_in_a_stream() -> None:
    parser = ChatParser(QWEN3)
    assert not parser.feed("<think>\n").reasoning
    assert not parser.feed("  \n").reasoning
    assert parser.feed("x").reasoning == "  \nx"


def test_an_opened_block_starts_with_the_prompts_leftover_whitespace() -> None:
    config = ChatParseConfig(reasoning="deepseek", thinking_opened=True, thinking_lead="\n")
    _all_splits(config, "abc\n</think>\n\n shop", ParsedMessage("\n\n shop", "\nabc\n"))
    _all_splits(config, "  hello ", ParsedMessage("", "\n  hello "))
    # the tag's own optional newline takes the prompt's
    qwen = ChatParseConfig(reasoning="deepseek", thinking_opened=True, thinking_lead="\n",
                           thinking_ws=("\n", "\n\n"))
    _all_splits(qwen, "abc</think>x", ParsedMessage("x", "abc"))


def test_unsplit_opened_block_is_content() -> None:
    config = ChatParseConfig(content_lead="<think>\n")
    parser = ChatParser(config)
    assert parser.feed("  abc").content == "<think>\n  abc"
    assert parse_whole(config, "  abc</think>x") == ParsedMessage("<think>\n  abc</think>x")


def test_format_none_still_skips_leading_whitespace() -> None:
    config = ChatParseConfig(skip_space=True)
    assert config.active
    _all_splits(config, "\n\n<think>x</think> y", ParsedMessage("<think>x</think> y"))


async def _answers(stub: service_pb2_grpc.LlamaServerStub,
                   req: chat_pb2.ChatCompletionRequest) -> tuple[tuple[str, str], list[str]]:
    """The whole message's (content, reasoning) and the stream's content deltas."""
    whole = [m async for m in stub.ChatCompletion(req, timeout=60)]
    msg = next(c.message for m in whole for c in m.choices if c.HasField("message"))
    req.stream = True
    deltas = [c.delta.content async for m in stub.ChatCompletion(req, timeout=60)
              for c in m.choices if c.delta.content]
    return (msg.content, msg.reasoning_content), deltas


@pytest.mark.slow
def test_space_after_the_end_tag_over_grpc(tiny_bpe_path: Path) -> None:
    """Qwen3's template, the model made to write `</think> shop`: the space stays, whole and
    streamed (llama-server answers the same; the differential corpus compares them)."""
    config = load_config(["-m", str(tiny_bpe_path), "-c", "512", "-np", "1", "--no-warmup",
                          "--chat-template-file", str(TEMPLATES / "Qwen-Qwen3-0.6B.jinja")],
                         env={})
    req = chat_pb2.ChatCompletionRequest(max_tokens=32, temperature=0.0, stream=False,
                                         grammar="root ::= " + json.dumps(
                                             "<think>\nabc\n</think> shop"))
    req.messages.add(role="user").content.string_value = "Hello there"

    async def scenario() -> tuple[tuple[str, str], list[str]]:
        handle = await start_server(config, host="127.0.0.1", port=0)
        try:
            await asyncio.wait_for(handle.loaded.wait(), 60)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as ch:
                return await _answers(service_pb2_grpc.LlamaServerStub(ch), req)
        finally:
            await handle.stop(0)

    whole, deltas = asyncio.run(scenario())
    assert whole == (" shop", "abc\n")
    assert "".join(deltas) == " shop" and deltas[0].startswith(" ")
