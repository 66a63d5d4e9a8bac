"""JSON text in GBNF: exact JSON values (const, enum, property names) and one character of a
JSON string drawn from a set of code points (string patterns).

Grammars constrain the JSON *text* the model writes, so a character inside a string must be
written the way JSON encodes it: a quote or backslash escaped, control characters as \\n or
\\u00XX. Each character gets one canonical encoding; the grammar does not offer the others
(\\/, \\u0041 for A), which keeps it small and never lets a value escape its quotes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from service import gbnf
from service.json_schema_errors import SchemaError

_SHORT_JSON_ESCAPES = {0x22: '\\"', 0x5C: "\\\\", 0x08: "\\b", 0x0C: "\\f", 0x0A: "\\n",
                       0x0D: "\\r", 0x09: "\\t"}
# Code points a JSON string cannot hold raw.
_NEEDS_ESCAPE = gbnf.interval_set([(0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C)])


def json_char(cp: int) -> str:
    """The canonical JSON encoding of one code point inside a string."""
    if cp in _SHORT_JSON_ESCAPES:
        return _SHORT_JSON_ESCAPES[cp]
    if cp < 0x20 or 0xD800 <= cp <= 0xDFFF:  # lone surrogates cannot be written as UTF-8
        return f"\\u{cp:04x}"
    return chr(cp)


def json_string(text: str) -> str:
    return '"' + "".join(json_char(ord(c)) for c in text) + '"'


def json_text(value: Any, where: str = "#") -> str:
    """Compact JSON text of a schema-given value, keys in their given order."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, str):
        return json_string(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SchemaError(f"{where}: {value} has no JSON form")
        # A protobuf Struct (the gRPC API's schema) turns every number into a float; 1.0
        # equals 1 in JSON Schema, and clients mean the integer.
        return str(int(value)) if value.is_integer() and abs(value) < 2**53 else json.dumps(value)
    if isinstance(value, Mapping):
        members = (json_string(str(k)) + ":" + json_text(v, where) for k, v in value.items())
        return "{" + ",".join(members) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(json_text(v, where) for v in value) + "]"
    raise SchemaError(f"{where}: {type(value).__name__} value is not JSON")


def value_literal(value: Any, where: str = "#") -> str:
    """A GBNF literal matching exactly the compact JSON text of `value`."""
    return gbnf.literal(json_text(value, where))


def string_char(chars: gbnf.Intervals) -> str:
    """GBNF for one JSON-encoded string character whose code point is in `chars`."""
    if not chars:
        raise SchemaError("a character class matches no character")
    options = []
    plain = gbnf.subtract(chars, _NEEDS_ESCAPE)
    if plain:
        options.append(gbnf.char_class(plain))
    escaped = gbnf.intersect(chars, _NEEDS_ESCAPE)
    codes = [cp for lo, hi in escaped for cp in range(lo, hi + 1)]
    options += [gbnf.literal(_SHORT_JSON_ESCAPES[cp]) for cp in codes
                if cp in _SHORT_JSON_ESCAPES]
    others = [cp for cp in codes if cp not in _SHORT_JSON_ESCAPES]
    if others:
        options.append(_unicode_escapes(others))
    return gbnf.alternatives(options)


def _unicode_escapes(codes: list[int]) -> str:
    """\\u00XX for control characters without a short escape, grouped by the high digit."""
    by_high: dict[int, list[int]] = {}
    for cp in codes:
        by_high.setdefault(cp >> 4, []).append(cp & 0xF)
    options = []
    for high, lows in sorted(by_high.items()):
        low_class = gbnf.char_class(gbnf.interval_set((ord(f"{d:x}"),) * 2 for d in lows))
        options.append(f'"{high}" {low_class}')
    return '"\\\\u00" ' + gbnf.group(gbnf.alternatives(options))


def string_except(names: list[str], any_char: str) -> str:
    """GBNF for the key of an additional property (quotes included), in the language llama.cpp
    gives it (common/json-schema-to-grammar.cpp), so that greedy picks agree with
    llama-server's: the key is empty, or it leaves the declared names' prefix tree by a
    character no name continues with (any code point but a quote, even one JSON would escape)
    and goes on with any string characters, or it runs through the tree and must go on past
    wherever it stops in it: past the end of a name by one character at least. So a key that
    is a proper prefix of a name is refused too, as there. any_char is the rule for one
    string character.
    """
    tree: dict[str, Any] = {}
    for name in names:
        node = tree
        for c in name:
            node = node.setdefault(c, {})
    body = _not_in_tree(tree, any_char)
    if not body:  # only the empty name: llama.cpp's empty group lets that very key through
        return '"\\"" "\\""'
    optional = "" not in names
    return '"\\"" ' + (f"( {body} )?" if optional else gbnf.group(body)) + ' "\\""'


def _not_in_tree(root: dict[str, Any], any_char: str) -> str:
    """The expression for the subtree at `root`, built from the leaves up without recursion:
    a name of thousands of characters is a tree as deep, and would exceed Python's recursion
    limit (the grammar then nests one group a character; grammar_limits bounds that)."""
    done: dict[int, str] = {}  # id(node) -> its expression
    todo: list[tuple[dict[str, Any], bool]] = [(root, False)]
    while todo:
        node, children_done = todo.pop()
        if not children_done:
            todo.append((node, True))
            todo.extend((child, False) for child in node.values() if child)
            continue
        options = []
        for c in sorted(node):
            one = gbnf.char_class(gbnf.interval_set([(ord(c), ord(c))]))
            child = node[c]
            options.append(f"{one} ( {done.pop(id(child))} )" if child else f"{one} {any_char}+")
        if node:
            taken = gbnf.interval_set([(ord('"'), ord('"')), *((ord(c), ord(c)) for c in node)])
            options.append(f"{gbnf.char_class(gbnf.complement(taken))} {any_char}*")
        done[id(node)] = gbnf.alternatives(options)
    return done[id(root)]
