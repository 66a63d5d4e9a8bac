"""llama-server's assistant prefill, the answer's side: the continued message is the start of
the answer (service.chat_template.render_continued, service.chat_render, service.chat_parse),
in pure units and over gRPC with a template that writes a thinking block."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from llama.v1 import chat_pb2, service_pb2_grpc

from native.paths import source_dir
from service.chat_parse import ChatParseConfig, ChatParser
from service.chat_parse_core import ChatDelta, ParsedMessage
from service.chat_render import template_thinking_tags
from service.chat_template import ChatTemplate, TemplateError
from service.chat_template_builtins import CHATML_TEMPLATE
from service.config import load_config
from service.server import start_server

QWEN3 = source_dir() / "models" / "templates" / "Qwen-Qwen3-0.6B.jinja"
USER = {"role": "user", "content": "Hello there"}


def _qwen3() -> ChatTemplate:
    return ChatTemplate.compile(QWEN3.read_text(), bos_token="<s>", eos_token="</s>")


def _assistant(content: str = "", reasoning: str = "") -> list[dict[str, str]]:
    return [USER, {"role": "assistant", "content": content, "reasoning_content": reasoning}]


def test_the_continued_message_is_the_answers_start() -> None:
    template = ChatTemplate.compile(CHATML_TEMPLATE)
    assert template_thinking_tags(template) is None
    continued = template.render_continued(_assistant("Once upon"))
    assert continued.answer == "Once upon"
    assert continued.prompt == (
        "<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\nOnce upon")
    # no thinking block to continue in: refused, not silently dropped
    with pytest.raises(TemplateError, match="no thinking block"):
        template.render_continued(_assistant("x", "y"), mode="reasoning")


def test_thinking_tags_keep_the_templates_whitespace() -> None:
    """As llama-server's template analysis finds them: `<think>\\n` ... `\\n</think>\\n\\n`."""
    template = _qwen3()
    tags = template_thinking_tags(template)
    assert tags == ("<think>\n", "\n</think>\n\n")
    head = "<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n"
    cases = {  # (message, mode): the answer's start
        (("Hi", ""), "auto"): "<think>\n\n</think>\n\nHi",
        (("", "Think"), "auto"): "<think>\nThink",  # only reasoning: continue it
        (("Hi", "Think"), "auto"): "<think>\nThink\n</think>\n\nHi",
        (("Hi", "Think"), "reasoning"): "<think>\nThink",  # the content is dropped
        (("", "Think"), "content"): "<think>\nThink\n</think>\n\n",
    }
    for ((content, reasoning), mode), answer in cases.items():
        continued = template.render_continued(_assistant(content, reasoning), mode=mode,
                                              reasoning_tags=tags)
        assert (continued.prompt, continued.answer) == (head + answer, answer), (content, mode)


def _streamed(config: ChatParseConfig, pieces: list[str]) -> tuple[list[ChatDelta], ParsedMessage]:
    parser = ChatParser(config)
    deltas = [parser.feed(p) for p in pieces]
    deltas.append(parser.finish())
    return deltas, parser.message


@pytest.mark.parametrize("echo", [True, False])
def test_the_prefix_is_in_the_message_and_streamed_only_when_echoed(echo: bool) -> None:
    config = ChatParseConfig(reasoning="deepseek", prefix="<think>\nThink\n</think>\n\nHi",
                             echo_prefix=echo, thinking_ws=("\n", "\n\n"))
    deltas, message = _streamed(config, [" there", "!"])
    assert message == ParsedMessage("Hi there!", "Think\n")
    streamed = ParsedMessage()
    for d in deltas:
        streamed.add(d)
    assert streamed == (message if echo else ParsedMessage(" there!"))
    assert deltas[0].content == ("Hi there" if echo else " there")


async def _chat(stub: service_pb2_grpc.LlamaServerStub,
                req: chat_pb2.ChatCompletionRequest) -> tuple[str, str, str]:
    """The whole answer's content and reasoning, and the first streamed reasoning delta."""
    whole = [m async for m in stub.ChatCompletion(req, timeout=60)]
    message = next(c.message for m in whole for c in m.choices if c.HasField("message"))
    req.stream = True
    first = ""
    async for m in stub.ChatCompletion(req, timeout=60):
        for c in m.choices:
            first = first or c.delta.reasoning_content
    return message.content, message.reasoning_content, first


@pytest.mark.slow
def test_prefilled_reasoning_over_grpc(tiny_bpe_path: Path) -> None:
    """A thinking template (Qwen3's): the prefilled reasoning is continued and comes back as
    the start of reasoning_content, whole and streamed (a prefill's stream echoes it)."""
    config = load_config(["-m", str(tiny_bpe_path), "-c", "512", "-np", "1", "--no-warmup",
                          "--chat-template-file", str(QWEN3)], env={})
    req = chat_pb2.ChatCompletionRequest(max_tokens=3, temperature=0.0)
    req.messages.add(role="user").content.string_value = "Hello there"
    turn = req.messages.add(role="assistant", reasoning_content="Let me think")
    turn.content.string_value = ""

    async def scenario() -> tuple[str, str, str]:
        handle = await start_server(config, host="127.0.0.1", port=0)
        try:
            await asyncio.wait_for(handle.loaded.wait(), 60)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as ch:
                return await _chat(service_pb2_grpc.LlamaServerStub(ch), req)
        finally:
            await handle.stop(0)

    content, reasoning, first = asyncio.run(scenario())
    assert "<think>" not in content  # the prefilled tag was parsed, as llama-server's
    assert reasoning.startswith("Let me think") and len(reasoning) > len("Let me think")
    assert first.startswith("Let me think")
