"""A chat answer parsed as it is generated: reasoning first (service.reasoning), then the
template's tool-call format (service.chat_parse_formats) over the rest.

    parser = ChatParser(ChatParseConfig(HERMES, reasoning="deepseek"))
    delta = parser.feed(piece)      # per generated piece: what it added
    last = parser.finish()          # at the end: what was held back
    parser.message                  # the whole answer (ParsedMessage)

The deltas of any split of the text add up to `parser.message`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from service.chat_parse_core import ChatDelta, Out, ParsedMessage, new_call_id
from service.chat_parse_formats import CONTENT_ONLY, FORMATS, reasoning_tags
from service.chat_parse_machine import FormatParser
from service.json_schema_answer import JsonAnswerText
from service.reasoning import SPACE, ReasoningSplit


@dataclass(frozen=True)
class ChatParseConfig:
    format: str = CONTENT_ONLY  # a chat_parse_formats name; CONTENT_ONLY: no tool calls
    reasoning: str = "none"  # the reasoning_format
    thinking_opened: bool = False  # the prompt ends inside a thinking block
    max_calls: int = 0  # keep this many tool calls at most (0: all; parallel_tool_calls)
    prefix: str = ""  # parsed before the answer, as its start (the request's generation_prompt)
    echo_prefix: bool = False  # the prefix's parse goes out with the first delta too
    json_answer: bool = False  # a JSON answer in llama-server's frame (json_schema_answer)
    # the whitespace the template writes after its thinking tags (optional in the answer), and
    # what a prompt that opens the block left after its start tag (service.reasoning)
    thinking_ws: tuple[str, str] = ("", "")
    thinking_lead: str = ""
    skip_space: bool = False  # whitespace before the answer skipped (a thinking template's)
    content_lead: str = ""  # the content's start, out with the first delta (not in a JSON answer)

    @property
    def active(self) -> bool:
        return self.format != CONTENT_ONLY or self.reasoning != "none" or bool(self.prefix) \
            or self.json_answer or self.skip_space \
            or bool(self.content_lead)


class ChatParser:
    def __init__(self, config: ChatParseConfig,
                 new_id: Callable[[], str] = new_call_id) -> None:
        self.out = Out(new_id, config.max_calls)
        self.message = ParsedMessage()
        self.format = FormatParser(FORMATS[config.format], self.out)
        self.reasoning: ReasoningSplit | None = None
        if config.reasoning != "none":
            self.reasoning = ReasoningSplit(
                self.out, self.format.feed, reasoning_tags(config.format),
                legacy=config.reasoning == "deepseek-legacy", opened=config.thinking_opened,
                ws=config.thinking_ws, lead=config.thinking_lead)
        self.answer: JsonAnswerText | None = None
        self._echo: ChatDelta | None = None
        self._skip_space = config.skip_space
        if config.prefix:
            echoed = self.feed(config.prefix)
            self._echo = echoed if config.echo_prefix else None
        # after the prefix: the frame starts where the answer does
        self.answer = JsonAnswerText() if config.json_answer else None
        if config.content_lead and not config.json_answer:
            self.format.feed(config.content_lead)  # taken with the first delta

    def feed(self, text: str) -> ChatDelta:
        if self._skip_space:
            text = text.lstrip(SPACE)
            self._skip_space = not text
        if self.answer is not None:
            text = self.answer.feed(text)
        if self.reasoning is not None:
            self.reasoning.feed(text)
        else:
            self.format.feed(text)
        return self._take()

    def finish(self) -> ChatDelta:
        rest = self.answer.finish() if self.answer is not None else ""
        if rest:  # a JSON answer cut off inside a value keeps its last blanks
            (self.reasoning.feed if self.reasoning is not None else self.format.feed)(rest)
        if self.reasoning is not None:
            self.reasoning.finish()
        self.format.finish()
        return self._take()

    def _take(self) -> ChatDelta:
        delta = self.out.take()
        if delta:
            self.message.add(delta)
        if self._echo is not None:  # already in the message
            echoed, self._echo = self._echo, None
            delta = ChatDelta(echoed.content + delta.content, echoed.reasoning + delta.reasoning,
                              [*echoed.tool_calls, *delta.tool_calls])
        return delta


def parse_whole(config: ChatParseConfig, text: str,
                new_id: Callable[[], str] = new_call_id) -> ParsedMessage:
    parser = ChatParser(config, new_id)
    parser.feed(text)
    parser.finish()
    return parser.message
