"""A JSON Schema `pattern` (an ECMA-262 regular expression) as GBNF for the string's content.

Supported: literal characters and escapes (\\t \\n \\xHH \\uHHHH \\u{H..} \\cX, escaped
punctuation), classes [...] and [^...] with ranges, \\d \\w \\s and their negations, `.`,
quantifiers ? * + {m} {m,} {m,n} (lazy forms match the same strings), groups (...), (?:...) and
named groups, alternation |, and ^ / $ at the start / end of a top-level alternative. A side
left unanchored matches any characters there, since a JSON Schema pattern is a search, not a
full match. Everything else (backreferences, lookaround, \\b, \\p{..}, inline flags, anchors
elsewhere) raises SchemaError naming the construct.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from service import gbnf
from service.json_schema_errors import SchemaError
from service.json_schema_literals import json_char, string_char


@dataclass(frozen=True)
class Chars:
    chars: gbnf.Intervals


@dataclass(frozen=True)
class Seq:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Alt:
    options: tuple[Node, ...]


@dataclass(frozen=True)
class Repeat:
    item: Node
    lo: int
    hi: int | None


@dataclass(frozen=True)
class Anchor:
    kind: str  # "^" or "$"


Node = Chars | Seq | Alt | Repeat | Anchor

_DIGIT = gbnf.interval_set([(0x30, 0x39)])
_WORD = gbnf.interval_set([(0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)])
_SPACE = gbnf.interval_set([(0x09, 0x0D), (0x20, 0x20), (0xA0, 0xA0), (0x1680, 0x1680),
                            (0x2000, 0x200A), (0x2028, 0x2029), (0x202F, 0x202F),
                            (0x205F, 0x205F), (0x3000, 0x3000), (0xFEFF, 0xFEFF)])
_DOT = gbnf.complement(gbnf.interval_set([(0x0A, 0x0A), (0x0D, 0x0D), (0x2028, 0x2029)]))
_CLASS_ESCAPES = {"d": _DIGIT, "D": gbnf.complement(_DIGIT), "w": _WORD,
                  "W": gbnf.complement(_WORD), "s": _SPACE, "S": gbnf.complement(_SPACE)}
_CHAR_ESCAPES = {"t": 0x09, "n": 0x0A, "v": 0x0B, "f": 0x0C, "r": 0x0D}
_REFUSED_ESCAPES = {"b": "word boundary \\b", "B": "word boundary \\B",
                    "p": "Unicode property escape \\p", "P": "Unicode property escape \\P",
                    "k": "named backreference \\k"}
_QUANTIFIER_BRACES = re.compile(r"\{(\d+)(?:(,)(\d*))?\}")
_MAX_DEPTH = 100


def _one(cp: int) -> Chars:
    return Chars(((cp, cp),))


class _Parser:
    def __init__(self, pattern: str) -> None:
        self.src, self.pos, self.depth = pattern, 0, 0

    def fail(self, what: str) -> SchemaError:
        return SchemaError(f"pattern {self.src!r}: {what} (at offset {self.pos})")

    def peek(self, k: int = 0) -> str:
        i = self.pos + k
        return self.src[i] if i < len(self.src) else ""

    def parse(self) -> Node:
        node = self.alternation()
        if self.pos < len(self.src):
            raise self.fail("unbalanced ')'")
        return node

    def alternation(self) -> Node:
        options = [self.sequence()]
        while self.peek() == "|":
            self.pos += 1
            options.append(self.sequence())
        return options[0] if len(options) == 1 else Alt(tuple(options))

    def sequence(self) -> Node:
        items: list[Node] = []
        while self.peek() not in ("", "|", ")"):
            atom = self.atom()
            bounds = self.quantifier()
            if bounds is not None:
                if isinstance(atom, Anchor):
                    raise self.fail(f"quantified anchor {atom.kind}")
                atom = Repeat(atom, *bounds)
                if self.quantifier() is not None:
                    raise self.fail("nothing to repeat")
            items.append(atom)
        return items[0] if len(items) == 1 else Seq(tuple(items))

    def quantifier(self) -> tuple[int, int | None] | None:
        c = self.peek()
        bounds: tuple[int, int | None]
        if c in ("*", "+", "?"):
            bounds = {"*": (0, None), "+": (1, None), "?": (0, 1)}[c]
            self.pos += 1
        elif c == "{" and (m := _QUANTIFIER_BRACES.match(self.src, self.pos)):
            lo = int(m.group(1))
            hi = None if m.group(2) and not m.group(3) else int(m.group(3) or lo)
            if hi is not None and hi < lo:
                raise self.fail(f"quantifier {m.group(0)} is out of order")
            bounds = (lo, hi)
            self.pos = m.end()
        else:
            return None
        if self.peek() == "?":  # lazy: the same strings match
            self.pos += 1
        return bounds

    def atom(self) -> Node:
        c = self.peek()
        if c == "(":
            return self.group()
        if c == "[":
            self.pos += 1
            return Chars(self.char_class())
        self.pos += 1
        if c == ".":
            return Chars(_DOT)
        if c in ("^", "$"):
            return Anchor(c)
        if c == "\\":
            chars, _ = self.escape(in_class=False)
            return Chars(chars)
        if c in ("*", "+", "?") or (c == "{" and _QUANTIFIER_BRACES.match(self.src, self.pos - 1)):
            self.pos -= 1
            raise self.fail(f"nothing to repeat before {c!r}")
        return _one(ord(c))

    def group(self) -> Node:
        self.pos += 1
        if self.peek() == "?":
            if self.src.startswith(("?=", "?!", "?<=", "?<!"), self.pos):
                raise self.fail("lookaround groups are not supported")
            m = re.compile(r"\?(?::|P?<[A-Za-z_][A-Za-z0-9_]*>)").match(self.src, self.pos)
            if not m:
                raise self.fail("inline flags and other (?...) groups are not supported")
            self.pos = m.end()
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise self.fail("groups nest too deeply")
        node = self.alternation()
        self.depth -= 1
        if self.peek() != ")":
            raise self.fail("missing ')'")
        self.pos += 1
        return node

    def char_class(self) -> gbnf.Intervals:
        negate = self.peek() == "^"
        self.pos += negate
        ranges: list[tuple[int, int]] = []
        while self.peek() != "]":
            if not self.peek():
                raise self.fail("unterminated character class")
            chars, single = self.class_atom()
            if single is not None and self.peek() == "-" and self.peek(1) not in ("]", ""):
                self.pos += 1
                _, end = self.class_atom()
                if end is None:
                    raise self.fail("a class range cannot end in a class escape")
                if end < single:
                    raise self.fail("character class range out of order")
                ranges.append((single, end))
            else:
                ranges.extend(chars)
        self.pos += 1
        chars = gbnf.interval_set(ranges)
        return gbnf.complement(chars) if negate else chars

    def class_atom(self) -> tuple[gbnf.Intervals, int | None]:
        c = self.peek()
        self.pos += 1
        if c == "\\":
            return self.escape(in_class=True)
        return ((ord(c), ord(c)),), ord(c)

    def escape(self, in_class: bool) -> tuple[gbnf.Intervals, int | None]:
        """After a backslash: the characters it stands for, and the code point if single."""
        c = self.peek()
        if not c:
            raise self.fail("trailing backslash")
        self.pos += 1
        if c in _CLASS_ESCAPES:
            return _CLASS_ESCAPES[c], None
        cp = self.escaped_codepoint(c, in_class)
        return ((cp, cp),), cp

    def escaped_codepoint(self, c: str, in_class: bool) -> int:
        if c == "b" and in_class:
            return 0x08
        if c in _REFUSED_ESCAPES:
            raise self.fail(f"{_REFUSED_ESCAPES[c]} is not supported")
        if c in _CHAR_ESCAPES:
            return _CHAR_ESCAPES[c]
        if c == "0" and not self.peek().isdigit():
            return 0
        if c.isdigit():
            raise self.fail("backreferences are not supported")
        if c == "c" and self.peek().isascii() and self.peek().isalpha():
            self.pos += 1
            return ord(self.src[self.pos - 1]) % 32
        if c in ("x", "u"):
            return self.hex_escape(c)
        if c.isascii() and c.isalnum():
            raise self.fail(f"unknown escape \\{c}")
        return ord(c)

    def hex_escape(self, c: str) -> int:
        if c == "u" and self.peek() == "{":
            m = re.compile(r"\{([0-9A-Fa-f]{1,6})\}").match(self.src, self.pos)
        else:
            m = re.compile(f"[0-9A-Fa-f]{{{2 if c == 'x' else 4}}}").match(self.src, self.pos)
        if not m:
            raise self.fail(f"malformed \\{c} escape")
        self.pos = m.end()
        cp = int(m.group(1) if m.lastindex else m.group(0), 16)
        if cp > gbnf.MAX_CODEPOINT:
            raise self.fail(f"code point {cp:#x} is out of range")
        return cp


def _nullable(node: Node) -> bool:
    if isinstance(node, Chars):
        return False
    if isinstance(node, Seq):
        return all(_nullable(i) for i in node.items)
    if isinstance(node, Alt):
        return any(_nullable(o) for o in node.options)
    if isinstance(node, Repeat):
        return node.lo == 0 or _nullable(node.item)
    return True


def _has_anchor(node: Node) -> bool:
    if isinstance(node, Anchor):
        return True
    if isinstance(node, Seq):
        return any(_has_anchor(i) for i in node.items)
    if isinstance(node, Alt):
        return any(_has_anchor(o) for o in node.options)
    return isinstance(node, Repeat) and _has_anchor(node.item)


class _Emitter:
    """Turns the tree into GBNF; repeated or multi-option parts become rules `name-N`, so
    llama.cpp never multiplies nested repetitions."""

    def __init__(self, pattern: str, name: str, add_rule: Callable[[str, str], str]) -> None:
        self.pattern, self.name, self.add_rule = pattern, name, add_rule
        self.sub_rules: dict[str, str] = {}

    def rule_for(self, body: str) -> str:
        if body not in self.sub_rules:
            self.sub_rules[body] = self.add_rule(f"{self.name}-{len(self.sub_rules) + 1}", body)
        return self.sub_rules[body]

    def expr(self, node: Node) -> str:
        if isinstance(node, Chars):
            if len(node.chars) == 1 and node.chars[0][0] == node.chars[0][1]:
                return gbnf.literal(json_char(node.chars[0][0]))
            body = string_char(node.chars)
            return body if gbnf.is_symbol(body) else self.rule_for(body)
        if isinstance(node, Seq):
            return self.seq(node.items)
        if isinstance(node, Alt):
            return gbnf.alternatives([self.expr(o) for o in node.options])
        if isinstance(node, Repeat):
            return self.repeat(node)
        raise SchemaError(f"pattern {self.pattern!r}: anchor {node.kind} inside the pattern "
                          "is not supported (only at the start/end of an alternative)")

    def seq(self, items: tuple[Node, ...]) -> str:
        parts: list[str] = []
        text = ""
        for item in items:
            if isinstance(item, Chars) and len(item.chars) == 1 and \
                    item.chars[0][0] == item.chars[0][1]:
                text += json_char(item.chars[0][0])
                continue
            if text:
                parts.append(gbnf.literal(text))
                text = ""
            parts.append(gbnf.group(e) if (e := self.expr(item)) else "")
        if text:
            parts.append(gbnf.literal(text))
        return gbnf.sequence(parts)

    def repeat(self, node: Repeat) -> str:
        hi = None if node.hi is not None and node.hi > gbnf.MAX_REPEAT else node.hi
        inner = self.expr(node.item)
        if not inner or hi == 0:
            return ""
        if hi is None and _nullable(node.item):
            raise SchemaError(f"pattern {self.pattern!r}: repeating a part that can match "
                              "the empty string is not supported")
        if not gbnf.is_symbol(inner) and hi != 1:
            inner = self.rule_for(inner)
        return gbnf.repeat(inner, node.lo, hi, f"pattern {self.pattern!r}")


def pattern_to_gbnf(pattern: str, name: str, add_rule: Callable[[str, str], str],
                    any_char: str) -> str:
    """GBNF for the content (between the quotes) of a JSON string matching `pattern`.

    add_rule(name, body) registers a helper rule and returns its final name; any_char is the
    rule for one JSON string character, used on unanchored sides.
    """
    tree = _Parser(pattern).parse()
    emitter = _Emitter(pattern, name, add_rule)
    options = tree.options if isinstance(tree, Alt) else (tree,)
    out = []
    for option in options:
        items = list(option.items) if isinstance(option, Seq) else [option]
        anchored_start = bool(items) and items[0] == Anchor("^")
        anchored_end = len(items) > anchored_start and items[-1] == Anchor("$")
        items = items[int(anchored_start):len(items) - int(anchored_end)]
        if any(_has_anchor(i) for i in items):
            raise SchemaError(f"pattern {pattern!r}: an anchor inside the pattern is not "
                              "supported (only ^ at the start and $ at the end)")
        body = emitter.seq(tuple(items))
        out.append(gbnf.sequence(["" if anchored_start else f"{any_char}*",
                                  gbnf.group(body) if body else "",
                                  "" if anchored_end else f"{any_char}*"]))
    return gbnf.alternatives(out)
