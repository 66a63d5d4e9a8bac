"""Writing GBNF text that llama.cpp's grammar parser (src/llama-grammar.cpp) accepts.

Literals, character classes built from code-point intervals, bounded repetition and integer
ranges. Characters that the parser treats specially, or that are not printable, are written as
\\xHH / \\uHHHH / \\UHHHHHHHH escapes, so any code point survives the round trip.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from service.json_schema_errors import SchemaError

MAX_CODEPOINT = 0x10FFFF
# llama.cpp refuses a repetition whose minimum exceeds this, and treats a larger maximum as
# unbounded (MAX_REPETITION_THRESHOLD in llama-grammar.cpp).
MAX_REPEAT = 2000

Intervals = tuple[tuple[int, int], ...]  # sorted, disjoint, non-adjacent inclusive ranges

_RULE_NAME = re.compile(r"[A-Za-z0-9-]+")
_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"')
_CLASS = re.compile(r"\[(?:[^\]\\]|\\.)*\]")
_SHORT_ESCAPES = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r", 0x22: '\\"', 0x5C: "\\\\"}
# Characters with a meaning inside [...]: escaped there.
_CLASS_SPECIAL = {"]": "\\]", "-": "\\-", "^": "\\x5E", "[": "\\["}


# -- code-point sets ----------------------------------------------------------------------
def interval_set(ranges: Iterable[tuple[int, int]]) -> Intervals:
    """Normalise ranges (any order, overlapping) into sorted disjoint intervals."""
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if merged and lo <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return tuple(merged)


def complement(s: Intervals) -> Intervals:
    out: list[tuple[int, int]] = []
    start = 0
    for lo, hi in s:
        if lo > start:
            out.append((start, lo - 1))
        start = hi + 1
    if start <= MAX_CODEPOINT:
        out.append((start, MAX_CODEPOINT))
    return tuple(out)


def intersect(a: Intervals, b: Intervals) -> Intervals:
    out = []
    for alo, ahi in a:
        for blo, bhi in b:
            lo, hi = max(alo, blo), min(ahi, bhi)
            if lo <= hi:
                out.append((lo, hi))
    return interval_set(out)


def subtract(a: Intervals, b: Intervals) -> Intervals:
    return intersect(a, complement(b))


# -- characters and literals --------------------------------------------------------------
def gbnf_char(cp: int, in_class: bool = False) -> str:
    """One code point as written inside a GBNF literal (or, in_class, a character class)."""
    if cp in _SHORT_ESCAPES:
        return _SHORT_ESCAPES[cp]
    c = chr(cp)
    if in_class and c in _CLASS_SPECIAL:
        return _CLASS_SPECIAL[c]
    if cp < 0x20 or cp == 0x7F:
        return f"\\x{cp:02X}"
    if 0xD800 <= cp <= 0xDFFF or not c.isprintable() or (cp > 0x7F and c.isspace()):
        return f"\\u{cp:04X}" if cp <= 0xFFFF else f"\\U{cp:08X}"
    return c


def literal(text: str) -> str:
    """A GBNF literal matching `text` exactly."""
    if not text:
        raise ValueError("GBNF has no empty literal")
    return '"' + "".join(gbnf_char(ord(c)) for c in text) + '"'


def char_class(s: Intervals) -> str:
    """A GBNF character class matching one code point of the non-empty set `s`; written
    negated when that is shorter."""
    if not s:
        raise ValueError("empty character class")
    neg = complement(s)
    if neg and len(neg) <= len(s):
        return "[^" + _ranges(neg) + "]"
    return "[" + _ranges(s) + "]"


def _ranges(s: Intervals) -> str:
    parts = []
    for lo, hi in s:
        if lo == hi:
            parts.append(gbnf_char(lo, True))
        elif hi == lo + 1:
            parts.append(gbnf_char(lo, True) + gbnf_char(hi, True))
        else:
            parts.append(gbnf_char(lo, True) + "-" + gbnf_char(hi, True))
    return "".join(parts)


# -- expressions --------------------------------------------------------------------------
def is_symbol(expr: str) -> bool:
    """Whether `expr` is one GBNF symbol (rule name, literal, class) that a repetition
    operator can follow without parentheses."""
    return any(p.fullmatch(expr) for p in (_RULE_NAME, _LITERAL, _CLASS))


def has_top_level_alternation(expr: str) -> bool:
    """Whether `expr` has a `|` outside literals, classes and parentheses."""
    depth, i = 0, 0
    while i < len(expr):
        c = expr[i]
        if c in "\"[":
            close = '"' if c == '"' else "]"
            i += 1
            while i < len(expr) and expr[i] != close:
                i += 2 if expr[i] == "\\" else 1
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            return True
        i += 1
    return False


def group(expr: str) -> str:
    """`expr` ready to stand in a sequence: parenthesised if it has alternatives."""
    return f"( {expr} )" if has_top_level_alternation(expr) else expr


def alternatives(options: Iterable[str]) -> str:
    """Options joined by `|`, duplicates dropped; an empty option goes first, since a rule
    ending in `|` would continue on the next line."""
    unique = list(dict.fromkeys(options))
    if "" in unique and len(unique) > 1:
        unique.remove("")
        unique.insert(0, "")
    return unique[0] if len(unique) == 1 else " | ".join(unique)


def repeat(expr: str, lo: int, hi: int | None, where: str = "#") -> str:
    """`expr` repeated lo..hi times (hi None: unbounded); "" when it must not appear at all.

    A maximum beyond llama.cpp's repetition limit becomes unbounded, as the parser would make
    it anyway; a minimum beyond it cannot be expressed.
    """
    if lo > MAX_REPEAT:
        raise SchemaError(f"{where}: a repetition of at least {lo} exceeds llama.cpp's limit "
                          f"of {MAX_REPEAT}")
    if hi is not None and hi > MAX_REPEAT:
        hi = None
    if hi is not None and hi < lo:
        raise SchemaError(f"{where}: a repetition of {lo} to {hi} times matches nothing")
    if hi == 0:
        return ""
    sym = expr if is_symbol(expr) else f"( {expr} )"
    if (lo, hi) == (1, 1):
        return group(expr)
    if hi is None:
        return {0: f"{sym}*", 1: f"{sym}+"}.get(lo, f"{sym}{{{lo},}}")
    if (lo, hi) == (0, 1):
        return f"{sym}?"
    return f"{sym}{{{lo}}}" if lo == hi else f"{sym}{{{lo},{hi}}}"


def sequence(items: Iterable[str]) -> str:
    return " ".join(i for i in items if i)


# -- whole grammars -----------------------------------------------------------------------
_DEFINITION = re.compile(r"^([A-Za-z0-9-]+)[ \t]*::=", re.M)


def rule_names(grammar: str) -> set[str]:
    """The names of the rules `grammar` defines (each definition starting a line)."""
    return set(_DEFINITION.findall(grammar))


def rename_rule(grammar: str, old: str, new: str) -> str:
    """`grammar` with every use and definition of rule `old` named `new`; literals, character
    classes and comments are left as they are."""
    out, i, n = [], 0, len(grammar)
    while i < n:
        c = grammar[i]
        if c in "\"[":
            close = '"' if c == '"' else "]"
            j = i + 1
            while j < n and grammar[j] != close:
                j += 2 if grammar[j] == "\\" else 1
            out.append(grammar[i:j + 1])
            i = j + 1
        elif c == "#":
            j = grammar.find("\n", i)
            j = n if j < 0 else j
            out.append(grammar[i:j])
            i = j
        elif _RULE_NAME.match(c):
            m = _RULE_NAME.match(grammar, i)
            assert m is not None
            out.append(new if m.group() == old else m.group())
            i = m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)
