"""Integers between JSON-schema bounds, in the language llama.cpp's converter gives them
(build_min_max_int in common/json-schema-to-grammar.cpp), so that greedy sampling under our
grammar picks the same digits as llama-server under its own.

That language is the exact range when both bounds are given, except that a range reaching
below zero also accepts "-0". A bound on one side only leaves the other open up to about 16
digits, in a shape that llama.cpp builds digit by digit from the bound: after a bound's first
digit the rest is matched as a number of its own (leading zeros allowed, one digit fewer to
spare each time), so a few numbers on the wrong side of a bound of three digits or more get
through (a minimum of 105 lets "15" pass), as they do in llama-server.
"""

from __future__ import annotations

from service import gbnf
from service.json_schema_errors import SchemaError

MAX_DIGITS = 16


def integer_range(lo: int | None, hi: int | None, where: str = "#") -> str:
    """GBNF for the integers llama.cpp's grammar allows between lo and hi (None: open)."""
    if lo is not None and hi is not None:
        if lo > hi:
            raise SchemaError(f"{where}: no integer lies between minimum {lo} and maximum {hi}")
        return _both(lo, hi)
    if lo is not None:
        return _at_least(lo, MAX_DIGITS, top=True)
    if hi is not None:
        return _at_most(hi, MAX_DIGITS, top=True)
    raise ValueError("integer_range needs a bound")


def _digit(a: int, b: int) -> str:
    return f"[{a}]" if a == b else f"[{a}-{b}]"


def _more(lo: int, hi: int) -> str:
    """lo to hi more digits (llama.cpp writes `{0}` too, which matches nothing more)."""
    if lo == hi == 1:
        return "[0-9]"
    return f"[0-9]{{{lo}}}" if lo == hi else f"[0-9]{{{lo},{hi}}}"


def _neg(expr: str) -> str:
    return f'"-" ( {expr} )'


def _both(lo: int, hi: int) -> str:
    if hi < 0:
        return _neg(_both(-hi, -lo))
    options = []
    if lo < 0:
        options.append(_neg(_both(0, -lo)))  # "-0" included, as there
        lo = 0
    low, high = str(lo), str(hi)
    for n in range(len(low), len(high)):
        options.append(_same_length(low, "9" * n))
        low = "1" + "0" * n
    options.append(_same_length(low, high))
    return " | ".join(options)


def _same_length(low: str, high: str) -> str:
    """The digit strings of one length from low to high."""
    i = 0
    while i < len(low) and low[i] == high[i]:
        i += 1
    parts = [gbnf.literal(low[:i])] if i else []
    if i < len(low):
        a, b, rest = int(low[i]), int(high[i]), len(low) - i - 1
        if not rest:
            parts.append(f"[{a}-{b}]")
        else:
            parts.append(f"( {_split(a, b, low[i + 1:], high[i + 1:], rest)} )")
    return " ".join(parts)


def _split(a: int, b: int, low: str, high: str, rest: int) -> str:
    """Numbers from a·low to b·high (a < b) whose other digits are `rest` many: by first digit."""
    zeros, nines = "0" * rest, "9" * rest
    options = []
    high_done = False
    if low == zeros:
        options.append(f"{_digit(a, b - 1)} {_more(rest, rest)}")
    else:
        options.append(f"[{a}] ( {_same_length(low, nines)} )")
        if a < b - 1:
            high_done = high == nines
            options.append(f"{_digit(a + 1, b if high_done else b - 1)} {_more(rest, rest)}")
    if not high_done:
        options.append(f"[{b}] {gbnf.group(_same_length(zeros, high))}")
    return " | ".join(options)


def _at_least(low: int, digits: int, top: bool) -> str:
    spare = max(digits - 1, 1)
    if low < 0:
        return f"{_neg(_at_most(-low, digits, top=False))} | [0] | [1-9] {_more(0, digits - 1)}"
    if low == 0:
        return f"[0] | [1-9] {_more(0, spare)}" if top else _more(1, digits)
    start = 1 if top else 0
    if low <= 9:
        options = [f"{_digit(start, low - 1)} {_more(1, spare)}"] if low > start else []
        return " | ".join([*options, f"{_digit(low, 9)} {_more(0, spare)}"])
    text = str(low)
    first = int(text[0])
    options = [f"{_digit(start, first - 1)} {_more(len(text), spare)}"] if first > 1 else []
    options.append(f"[{first}] ( {_at_least(int(text[1:]), spare, top=False)} )")
    if first < 9:
        options.append(f"{_digit(first + 1, 9)} {_more(len(text) - 1, spare)}")
    return " | ".join(options)


def _at_most(high: int, digits: int, top: bool) -> str:
    if high < 0:
        return _neg(_at_least(-high, digits, top=False))
    below = [f'"-" [1-9] {_more(0, max(digits - 1, 1))}'] if top else []
    return " | ".join([*below, _both(0, high)])
