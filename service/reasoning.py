"""Reasoning ("thinking") text at the start of a chat answer, split from its content.

`reasoning_format` (request) or `--reasoning-format` (server): "none" leaves the text as
generated; "deepseek" and "auto" move a leading `<think>…</think>` block (Command R7B:
`<|START_THINKING|>…<|END_THINKING|>`) to `reasoning_content`. "deepseek-legacy" reaches this
module as "deepseek" (service.tool_calls: the pinned llama-server parses it so); the split's
`legacy` mode, which keeps the block in `content` too, is what llama-server's help text says.
Only a template that writes a thinking block gets a split (service.thinking_tags). A template
that opens the block itself (its prompt ends with `<think>`) makes the answer start inside it.
"""

from __future__ import annotations

from collections.abc import Callable

from service.chat_parse_core import Out, longest_prefix_tail
from service.engine.params import ParamError

REASONING_FORMATS = ("none", "auto", "deepseek", "deepseek-legacy")


def check_reasoning_format(value: str) -> str:
    if value not in REASONING_FORMATS:
        raise ParamError(f"reasoning_format must be one of {', '.join(REASONING_FORMATS)}; "
                         f"got {value!r}")
    return value


def opens_thinking(prompt: str, start_tag: str, end_tag: str) -> bool:
    """Whether a rendered prompt leaves the answer inside a thinking block."""
    tail = prompt.rstrip()
    return tail.endswith(start_tag) and not tail.endswith(end_tag)


SPACE = " \t\n\v\f\r"  # C's isspace, which llama-server's parser skips
BLANK = " \t\n\r"  # a reasoning text of these alone is dropped (common_chat_peg_mapper)


def opened_lead(prompt: str, start_tag: str) -> str:
    """The whitespace a prompt that opens the thinking block writes after its start tag:
    llama-server parses the prompt's end with the answer, so it belongs to the answer's parse."""
    k = prompt.rfind(start_tag)
    return prompt[k + len(start_tag):] if k >= 0 else ""


def thinking_whitespace(tags: tuple[str, str] | None) -> tuple[str, str]:
    """The whitespace a template's thinking tags (service.thinking_tags) end with: what the
    answer's parse may skip after each tag."""
    if tags is None:
        return "", ""
    start, end = tags
    return start[len(start.rstrip(SPACE)):], end[len(end.rstrip(SPACE)):]


class ReasoningSplit:
    """Feeds the answer's content to `content` and its reasoning to `out.think`, as
    llama-server's parser for a template with thinking tags (common/chat-auto-parser-generator.cpp
    analyze_reasoning::build_parser, chat-peg-parser.cpp optspace) splits it: whitespace before
    the start tag skipped; after each tag, the whitespace the template writes after it (`ws`,
    e.g. "\n" after `<think>`, "\n\n" after `</think>` for Qwen3) matched character by
    character, each one optional, nothing more (" shop" after `</think>` keeps its space); the
    reasoning is the text up to the end tag, its whitespace kept, dropped when whitespace alone.
    `lead` is the whitespace a prompt that opens the block left after its start tag."""

    def __init__(self, out: Out, content: Callable[[str], None], tags: tuple[str, str],
                 legacy: bool = False, opened: bool = False, ws: tuple[str, str] = ("", ""),
                 lead: str = "") -> None:
        self.out, self.content, self.legacy = out, content, legacy
        self.start, self.end = tags
        self.ws = ws
        self.buf = lead if opened else ""
        self.mode = "open" if opened else "start"
        self.k = 0  # the next optional whitespace character of the tag being closed
        self.held = ""  # reasoning so far, whitespace alone: out once text follows
        self.out_started = False
        if opened and legacy:
            self.content(self.start)

    def feed(self, text: str) -> None:
        if self.mode == "pass":
            self.content(text)
            return
        self.buf += text
        if self.mode == "start":
            self._start()
        if self.mode == "open" and self._skip(self.ws[0]):
            self.mode = "think"
        if self.mode == "think":
            self._think()
        if self.mode == "close" and self._skip(self.ws[1]):
            self.mode = "pass"
            buf, self.buf = self.buf, ""
            if buf:
                self.content(buf)

    def _skip(self, optional: str) -> bool:
        """Consumes `optional`'s characters one by one, each where the text has it; True once
        each was tried (the text then goes on after them)."""
        while self.k < len(optional) and self.buf:
            if self.buf[0] == optional[self.k]:
                self.buf = self.buf[1:]
            self.k += 1
        if self.k < len(optional):
            return False
        self.k = 0
        return True

    def _start(self) -> None:
        head = self.buf.lstrip(SPACE)
        if head.startswith(self.start):
            self.buf = head[len(self.start):]
            self.mode = "open"
            if self.legacy:
                self.content(self.start)
        elif not self.start.startswith(head):
            self.mode, self.buf = "pass", ""
            self.content(head)

    def _think(self) -> None:
        k = self.buf.find(self.end)
        if k < 0:
            keep = longest_prefix_tail(self.buf, (self.end,))
            self._reason(self.buf[:len(self.buf) - keep])
            self.buf = self.buf[len(self.buf) - keep:]
            return
        self._reason(self.buf[:k])
        if self.legacy:
            self.content(self.end)
        self.buf = self.buf[k + len(self.end):]
        self.mode = "close"

    def _reason(self, text: str) -> None:
        if not text:
            return
        if not self.out_started:
            self.held += text
            if not self.held.strip(BLANK):
                return
            text, self.held, self.out_started = self.held, "", True
        self.out.think(text)
        if self.legacy:
            self.content(text)

    def finish(self) -> None:
        if self.mode == "start":
            self.content(self.buf.lstrip(SPACE))
        elif self.mode in ("open", "think"):
            self._reason(self.buf)
        elif self.mode == "close":
            self.content(self.buf)
        self.buf, self.mode = "", "pass"
