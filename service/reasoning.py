"""Reasoning ("thinking") text at the start of a chat answer, split from its content.

`reasoning_format` (request) or `--reasoning-format` (server): "none" leaves the text as
generated; "deepseek" and "auto" move a leading `<think>…</think>` block (Command R7B:
`<|START_THINKING|>…<|END_THINKING|>`) to `reasoning_content`; "deepseek-legacy" does too and
keeps the block, tags included, in `content` as well. A template that opens the block itself
(its prompt ends with `<think>`) makes the answer start inside it.
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


class ReasoningSplit:
    """Feeds the answer's content to `content` and its reasoning to `out.think`."""

    def __init__(self, out: Out, content: Callable[[str], None], tags: tuple[str, str],
                 legacy: bool = False, opened: bool = False) -> None:
        self.out, self.content, self.legacy = out, content, legacy
        self.start, self.end = tags
        self.buf = ""
        self.mode = "think" if opened else "start"
        if opened and legacy:
            self.content(self.start)

    def feed(self, text: str) -> None:
        if self.mode == "pass":
            self.content(text)
            return
        self.buf += text
        if self.mode == "start":
            self._start()
        if self.mode == "think":
            self._think()
        if self.mode == "after":
            stripped = self.buf.lstrip()
            if stripped:
                self.mode, self.buf = "pass", ""
                self.content(stripped)

    def _start(self) -> None:
        head = self.buf.lstrip()
        if head.startswith(self.start):
            self.buf = head[len(self.start):]
            self.mode = "think"
            if self.legacy:
                self.content(self.start)
        elif not self.start.startswith(head):
            self.mode = "pass"
            buf, self.buf = self.buf, ""
            self.content(buf)

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
        self.mode = "after"

    def _reason(self, text: str) -> None:
        if not text:
            return
        if self.mode == "think" and not self.out_started:
            text = text.lstrip()
            if not text:
                return
            self.out_started = True
        self.out.think(text)
        if self.legacy:
            self.content(text)

    out_started = False

    def finish(self) -> None:
        if self.mode == "start":
            self.content(self.buf)
        elif self.mode == "think":
            self._reason(self.buf)
        self.buf, self.mode = "", "pass"
