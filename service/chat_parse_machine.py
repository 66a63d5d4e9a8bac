"""The state machine every tool-call format runs on (formats: service.chat_parse_formats).

A format is plain content searched for trigger words; a trigger leads to a list of alternative
patterns (`Alt`) matched side by side, one character at a time; the first to complete says what
follows: a call's JSON arguments, another list, a JSON string read as content, raw text to the
end (a code call), or content again. When every alternative fails, what they consumed is
content after all and the character that failed them is read again as content, so the result
never depends on how the text was split.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from service.chat_parse_core import (
    DONE,
    FAIL,
    MORE,
    JsonObjectScan,
    JsonStringDecode,
    Matcher,
    Out,
    Pattern,
    longest_prefix_tail,
)

# What follows an alternative (or a trigger word): its arguments, `then` after them ("call");
# the list `then` ("goto"); content ("content"); nothing kept unless not blank ("end"); raw text
# to the end, turned into a call by Format.raw_call(then, text) ("raw"); a JSON string's body
# read as content, then the list `then` ("string"); for a trigger word only: nothing ("drop").
ACTIONS = ("call", "goto", "content", "end", "raw", "string", "drop")


@dataclass(frozen=True)
class Alt:
    pattern: Pattern | None
    action: str
    then: str = ""


RawCall = Callable[[str, str], "tuple[str, str] | None"]


@dataclass(frozen=True)
class Format:
    name: str
    triggers: Mapping[str, Alt] = field(default_factory=dict)  # pattern unused
    lists: Mapping[str, tuple[Alt, ...]] = field(default_factory=dict)
    start: str = ""  # the list the answer starts with ("": content)
    # Lists that follow a complete call: an unfinished one at the end is dropped, not content.
    closing: frozenset[str] = frozenset()
    raw_call: RawCall | None = None  # (kind, text) -> (name, JSON arguments) or None


class FormatParser:
    """One answer's parser for `fmt`, writing what it finds to `out`."""

    def __init__(self, fmt: Format, out: Out) -> None:
        self.fmt, self.out = fmt, out
        self.words = tuple(fmt.triggers)
        self.buf = ""  # content held back: it may be the start of a trigger word
        # Drop blank text at the start and after each call (not in plain content's format).
        self.strip_ws = bool(fmt.triggers or fmt.start)
        self.mode = "content"
        self.list_name = ""
        self.matchers: list[tuple[Matcher, Alt]] = []
        self.raw = ""  # text consumed by the current list, content again if it fails
        self.scan: JsonObjectScan | None = None
        self.string: JsonStringDecode | None = None
        self.then = ""
        if fmt.start:
            self._enter_list(fmt.start, "")

    # -- feeding ------------------------------------------------------------------------------
    def feed(self, text: str) -> None:
        pos = 0
        while pos < len(text):
            pos = getattr(self, "_" + self.mode)(text, pos)

    def finish(self) -> None:
        out, mode = self.out, self.mode
        if mode == "content":
            out.text(self.buf)
        elif (mode == "alts" and self.list_name not in self.fmt.closing) or (
                mode == "args" and self.scan is not None and not self.scan.started):
            out.text(self.raw)
        elif mode == "raw":
            self._finish_raw()
        elif mode == "end" and self.raw.strip():
            out.text(self.raw)
        self.buf, self.raw, self.mode = "", "", "done"

    def _done(self, text: str, pos: int) -> int:
        return len(text)

    # -- modes ----------------------------------------------------------------------------------
    def _content(self, text: str, pos: int) -> int:
        if self.strip_ws:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos == len(text):
                return pos
            self.strip_ws = False
        s = self.buf + text[pos:]
        held = len(self.buf)
        best, word = -1, ""
        for w in self.words:
            k = s.find(w)
            if k >= 0 and (best < 0 or k < best):
                best, word = k, w
        if best < 0:
            keep = longest_prefix_tail(s, self.words)
            self.out.text(s[:len(s) - keep])
            self.buf = s[len(s) - keep:]
            return len(text)
        self.out.text(s[:best])
        self.buf = ""
        after = pos + best + len(word) - held
        self._act(self.fmt.triggers[word], {}, word)
        return after

    def _alts(self, text: str, pos: int) -> int:
        for i in range(pos, len(text)):
            ch = text[i]
            self.raw += ch
            live: list[tuple[Matcher, Alt]] = []
            for m, alt in self.matchers:
                status = m.feed(ch)
                if status == DONE:
                    self.matchers = []
                    self._act(alt, m.caps, "")
                    return i + 1
                if status == MORE:
                    live.append((m, alt))
            self.matchers = live
            if not live:
                self.out.text(self.raw[:-1])
                self.raw = ""
                self.mode = "content"
                return i  # the character that failed every alternative is content's
        return len(text)

    def _args(self, text: str, pos: int) -> int:
        scan = self.scan
        assert scan is not None
        was_started = scan.started
        status, end = scan.scan(text, pos)
        if status == FAIL:
            self.out.text(self.raw + text[pos:end])
            self.raw, self.mode = "", "content"
            return end
        if not was_started:
            if not scan.started:
                self.raw += text[pos:end]
                return end
            self.out.start_call(self.call_name)
            pos = text.index("{", pos)
        self.out.args(text[pos:end])
        if status == DONE:
            self._enter_list(self.then, "")
        return end

    def _string(self, text: str, pos: int) -> int:
        assert self.string is not None
        status, end = self.string.scan(text, pos, self.out.text)
        if status == DONE:
            self._enter_list(self.then, "")
        return end

    def _raw(self, text: str, pos: int) -> int:
        self.raw += text[pos:]
        return len(text)

    def _end(self, text: str, pos: int) -> int:
        self.raw += text[pos:]
        return len(text)

    # -- transitions ----------------------------------------------------------------------------
    def _enter_list(self, name: str, raw: str) -> None:
        alts = self.fmt.lists[name]
        self.list_name, self.raw, self.mode = name, raw, "alts"
        self.matchers = [(Matcher(a.pattern), a) for a in alts if a.pattern is not None]

    def _act(self, alt: Alt, caps: dict[str, str], word: str) -> None:
        action = alt.action
        if action == "goto":
            self._enter_list(alt.then, self.raw + word)
        elif action == "call":
            self.call_name = caps.get("name", "")
            self.scan, self.then = JsonObjectScan(), alt.then
            self.raw, self.mode = self.raw + word, "args"
        elif action == "content" or action == "drop":
            self.raw, self.mode = "", "content"
            self.strip_ws = action == "content"
        elif action == "end":
            self.raw, self.mode = "", "end"
        elif action == "raw":
            self.raw_kind, self.raw_prefix = alt.then, self.raw + word
            self.raw, self.mode = "", "raw"
        elif action == "string":
            self.string, self.then = JsonStringDecode(), alt.then
            self.raw, self.mode = "", "string"
        else:  # pragma: no cover - formats are static
            raise ValueError(f"unknown action {action!r}")

    def _finish_raw(self) -> None:
        call = self.fmt.raw_call(self.raw_kind, self.raw) if self.fmt.raw_call else None
        if call is None:
            self.out.text(self.raw_prefix + self.raw)
            return
        self.out.start_call(call[0])
        self.out.args(call[1])
