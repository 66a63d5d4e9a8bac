"""Incremental parsing of a chat answer into content, reasoning and tool calls: the pieces
every format is built from (service.chat_parse_formats puts them together).

A parser is fed the generated text as it comes, in pieces split anywhere, and returns what each
piece added as a `ChatDelta`; the deltas of any split add up to the same message (tests feed one
character at a time). Each character is looked at a bounded number of times: plain content is
searched with str.find for the format's trigger words, holding back only a tail that could start
one; call headers are matched a character at a time by small patterns (`Pattern`), and arguments
are scanned as JSON by `JsonObjectScan`, which passes them through as they come.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass
class ToolCallDelta:
    """A piece of one tool call: the first piece of a call has its id and name."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class ChatDelta:
    content: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.content or self.reasoning or self.tool_calls)


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass
class ParsedMessage:
    """A whole answer: what the deltas add up to."""

    content: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)

    def add(self, delta: ChatDelta) -> None:
        self.content += delta.content
        self.reasoning += delta.reasoning
        for piece in delta.tool_calls:
            if piece.index == len(self.tool_calls):
                self.tool_calls.append(ToolCall(piece.id, piece.name, piece.arguments))
            else:
                self.tool_calls[piece.index].arguments += piece.arguments


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


class Out:
    """Collects what a parser found since the last `take()`."""

    def __init__(self, new_id: Callable[[], str] = new_call_id, max_calls: int = 0) -> None:
        self.new_id, self.max_calls = new_id, max_calls  # max_calls 0: any number
        self.n_calls = 0
        self._skip = False  # a call past max_calls: dropped, arguments and all
        self._delta = ChatDelta()

    def text(self, s: str) -> None:
        if s:
            self._delta.content += s

    def think(self, s: str) -> None:
        if s:
            self._delta.reasoning += s

    def start_call(self, name: str) -> None:
        self._skip = bool(self.max_calls) and self.n_calls >= self.max_calls
        if self._skip:
            return
        self._delta.tool_calls.append(ToolCallDelta(self.n_calls, self.new_id(), name))
        self.n_calls += 1

    def args(self, s: str) -> None:
        if not s or self._skip:
            return
        calls = self._delta.tool_calls
        if calls and calls[-1].index == self.n_calls - 1:
            calls[-1].arguments += s
        else:
            calls.append(ToolCallDelta(self.n_calls - 1, arguments=s))

    def take(self) -> ChatDelta:
        delta, self._delta = self._delta, ChatDelta()
        return delta


# -- patterns: a sequence of elements matched one character at a time ----------------------
MORE, DONE, FAIL, PASS = 0, 1, 2, 3


class Element:
    """One step of a Pattern. `step(state, ch)` -> (status, state): MORE (ch consumed, the
    element goes on), DONE (ch consumed, element complete), PASS (complete without ch), FAIL."""

    def start(self) -> object:
        return None

    def step(self, state: object, ch: str, caps: dict[str, str]) -> tuple[int, object]:
        raise NotImplementedError


class Lit(Element):
    def __init__(self, text: str) -> None:
        assert text
        self.text = text

    def start(self) -> object:
        return 0

    def step(self, state: object, ch: str, caps: dict[str, str]) -> tuple[int, object]:
        pos = int(state)  # type: ignore[call-overload]
        if ch != self.text[pos]:
            return FAIL, pos
        pos += 1
        return (DONE if pos == len(self.text) else MORE), pos


class WS(Element):
    """Optional whitespace."""

    def step(self, state: object, ch: str, caps: dict[str, str]) -> tuple[int, object]:
        return (MORE, None) if ch.isspace() else (PASS, None)


class Str(Element):
    """A JSON string literal, decoded into caps[key]; `options` restricts its value."""

    def __init__(self, key: str, options: Sequence[str] = ()) -> None:
        self.key, self.options = key, frozenset(options)

    def start(self) -> object:
        return ""

    def step(self, state: object, ch: str, caps: dict[str, str]) -> tuple[int, object]:
        raw = str(state)
        if not raw:
            return (MORE, '"') if ch == '"' else (FAIL, raw)
        if ch == '"' and not _escaped(raw):
            try:
                value = json.loads(raw + '"')
            except ValueError:
                return FAIL, raw
            if self.options and value not in self.options:
                return FAIL, raw
            caps[self.key] = value
            return DONE, raw
        if len(raw) > 4096 or ch == "\n":
            return FAIL, raw
        return MORE, raw + ch


def _escaped(raw: str) -> bool:
    n = len(raw) - len(raw.rstrip("\\"))
    return n % 2 == 1


class Word(Element):
    """A name: one or more characters of `allowed`, ending before any character of `stops`."""

    def __init__(self, key: str, stops: str, allowed: str = r"[\w.\-:/]") -> None:
        self.key, self.stops, self.allowed = key, stops, re.compile(allowed)

    def start(self) -> object:
        return ""

    def step(self, state: object, ch: str, caps: dict[str, str]) -> tuple[int, object]:
        word = str(state)
        if ch in self.stops and word:
            caps[self.key] = word
            return PASS, word
        if len(word) < 256 and self.allowed.fullmatch(ch):
            return MORE, word + ch
        return FAIL, word


Part = Element | str


class Pattern:
    def __init__(self, *elements: Part) -> None:
        self.elements = tuple(Lit(e) if isinstance(e, str) else e for e in elements)


class Matcher:
    """One pattern being matched; `feed(ch)` -> MORE, DONE or FAIL."""

    __slots__ = ("caps", "i", "pattern", "state")

    def __init__(self, pattern: Pattern) -> None:
        self.pattern, self.i = pattern, 0
        self.caps: dict[str, str] = {}
        self.state = pattern.elements[0].start()

    def feed(self, ch: str) -> int:
        elements = self.pattern.elements
        while True:
            status, self.state = elements[self.i].step(self.state, ch, self.caps)
            if status == MORE:
                return MORE
            if status == FAIL:
                return FAIL
            self.i += 1
            if self.i == len(elements):
                # a pattern ends with a consuming element, so PASS here is a mismatch
                return DONE if status == DONE else FAIL
            self.state = elements[self.i].start()
            if status == DONE:
                return MORE


# -- JSON arguments ----------------------------------------------------------------------------
_JSON_SPECIAL = re.compile(r'[\\"{}\[\]]')


class JsonObjectScan:
    """Finds where a JSON object ends, passing its text through. Leading whitespace is
    skipped; anything but `{` first is a mismatch."""

    def __init__(self) -> None:
        self.depth = 0
        self.in_str = False
        self.esc = False
        self.started = False

    def scan(self, text: str, pos: int) -> tuple[int, int]:
        """From text[pos:]: (status, end). MORE: all consumed (end = len(text)); DONE: the
        object ends at `end`; FAIL: not an object (end = where)."""
        if not self.started:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos == len(text):
                return MORE, pos
            if text[pos] != "{":
                return FAIL, pos
            self.started = True
        i = pos
        n = len(text)
        while i < n:
            if self.esc:
                self.esc = False
                i += 1
                continue
            m = _JSON_SPECIAL.search(text, i)
            if m is None:
                return MORE, n
            i = m.start()
            ch = text[i]
            if self.in_str:
                if ch == "\\":
                    self.esc = True
                elif ch == '"':
                    self.in_str = False
            elif ch == '"':
                self.in_str = True
            elif ch in "{[":
                self.depth += 1
            elif ch in "}]":
                self.depth -= 1
                if self.depth == 0:
                    return DONE, i + 1
            i += 1
        return MORE, n


class JsonStringDecode:
    """The body of a JSON string after its opening quote, decoded as it comes."""

    def __init__(self) -> None:
        self.pending = ""  # an escape sequence not complete yet

    def scan(self, text: str, pos: int, emit: Callable[[str], None]) -> tuple[int, int]:
        i, n = pos, len(text)
        plain = []
        while i < n:
            ch = text[i]
            if self.pending:
                self.pending += ch
                i += 1
                done = self._escape_done()
                if done is None:
                    continue
                plain.append(done)
                continue
            if ch == "\\":
                self.pending = ch
            elif ch == '"':
                emit("".join(plain))
                return DONE, i + 1
            else:
                plain.append(ch)
            i += 1
        emit("".join(plain))
        return MORE, n

    def _escape_done(self) -> str | None:
        p = self.pending
        if p[1] != "u":
            self.pending = ""
            return str(json.loads('"' + p + '"')) if p[1] in '"\\/bfnrt' else p[1]
        if len(p) < 6:
            return None
        code = _hex4(p[2:6])
        if 0xD800 <= code < 0xDC00 and "\\u".startswith(p[6:8]):  # a pair's high half
            if len(p) < 12:
                return None
            low = _hex4(p[8:12])
            self.pending = ""
            if 0xDC00 <= low < 0xE000:
                return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00))
            return "\ufffd"
        self.pending = ""
        if 0xD800 <= code < 0xE000:
            return "\ufffd" + p[6:]
        return chr(code)


def _hex4(s: str) -> int:
    return int(s, 16) if re.fullmatch(r"[0-9a-fA-F]{4}", s) else 0xFFFD


def longest_prefix_tail(text: str, words: Sequence[str]) -> int:
    """The length of the longest tail of `text` that is a proper prefix of one of `words`."""
    best = 0
    for w in words:
        for k in range(min(len(w) - 1, len(text)), best, -1):
            if text.endswith(w[:k]):
                best = k
                break
    return best
