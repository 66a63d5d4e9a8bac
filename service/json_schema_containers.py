"""Objects and arrays in a JSON schema grammar: which members and elements, in what order.

An object writes its required properties first, then any subset of the optional ones in schema
order, then (if additionalProperties allows) extra members whose keys are none of the declared
names (nor a proper prefix of one, as in llama.cpp's grammars). Whitespace goes where
llama-server's grammars put it: after `{`, `[`, `,` and `:`, before `}` and `]`, and between a
declared key and its colon.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from service import gbnf
from service.json_schema_errors import SchemaError
from service.json_schema_literals import string_except, value_literal

COMMA = '"," space'
MAX_DECLARED_NAME = 500
"""Longest declared property name of an object that also allows additional properties: the
grammar for the other keys spells each declared name out one nested group per character
(grammar_limits.MAX_NESTING_DEPTH bounds the nesting), and builds it in time quadratic in the
name's length. Real property names are a few dozen characters."""


class Builder(Protocol):
    """What the container layouts need from the converter."""

    depth: int

    def add_rule(self, name: str, body: str) -> str: ...
    def primitive(self, name: str) -> str: ...
    def visit(self, schema: Any, name: str, where: str) -> str: ...


@dataclass(frozen=True)
class _Member:
    label: str  # the property name, or "additional"
    kv: str  # rule for `"key": value`
    required: bool
    repeated: bool = False  # additional members: any number of them


def child_name(name: str, part: str) -> str:
    return f"{name}-{part}" if name else part


def count(schema: Mapping[str, Any], key: str, where: str) -> int | None:
    """A non-negative integer keyword (minLength, maxItems, ...), None when absent."""
    value = schema.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise SchemaError(f"{where}: {key} must be a non-negative integer")
    return value


# -- objects ------------------------------------------------------------------------------
def object_body(b: Builder, schema: Mapping[str, Any], name: str, where: str) -> str:
    props = schema.get("properties", {})
    if not isinstance(props, Mapping):
        raise SchemaError(f"{where}: properties must be an object")
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise SchemaError(f"{where}: required must be an array of strings")
    # Like llama-server: declared properties close the object unless it says otherwise.
    additional = schema.get("additionalProperties", "properties" not in schema)
    if isinstance(additional, Mapping) and not additional:
        additional = True
    if not isinstance(additional, bool | Mapping):
        raise SchemaError(f"{where}: additionalProperties must be a boolean or a schema")
    if not props and not required and additional is True:
        return b.primitive("object")
    b.primitive("space")
    b.depth += 1
    try:
        members = _members(b, props, list(dict.fromkeys(required)), additional, name, where)
    finally:
        b.depth -= 1
    return _object_layout(b, members, name)


def _members(b: Builder, props: Mapping[str, Any], required: list[str], additional: Any,
             name: str, where: str) -> list[_Member]:
    members = []
    for prop, sub in props.items():
        if sub is False:  # the property must be absent
            if prop in required:
                raise SchemaError(f"{where}: required property {prop!r} has the schema false")
            continue
        members.append(_property(b, prop, sub, name, f"{where}/properties/{prop}",
                                 prop in required))
    if additional is not False:
        label = child_name(name, "additional")
        value = b.visit(additional, f"{label}-value", f"{where}/additionalProperties")
        declared = [m.label for m in members]
        longest = max(map(len, declared), default=0)
        if longest > MAX_DECLARED_NAME:
            raise SchemaError(f"{where}: a property name of {longest} characters is too long "
                              "to tell apart from the keys of additionalProperties (the limit "
                              f"is {MAX_DECLARED_NAME})")
        key = b.add_rule(f"{label}-k", string_except(declared, b.primitive("char"))) \
            if declared else b.primitive("string")
        kv = b.add_rule(f"{label}-kv", gbnf.sequence([key, '":"', "space", value]))
        members.append(_Member("additional", kv, required=False, repeated=True))
    return [m for m in members if m.required] + [m for m in members if not m.required]


def _property(b: Builder, prop: str, sub: Any, name: str, where: str,
              required: bool) -> _Member:
    path = child_name(name, prop)
    value = b.visit(sub, path, where)
    kv = b.add_rule(f"{path}-kv", gbnf.sequence([value_literal(prop), "space", '":"', "space",
                                                  value]))
    return _Member(prop, kv, required)


def _object_layout(b: Builder, members: list[_Member], name: str) -> str:
    if not members:
        return '"{" space "}"'
    required = [m for m in members if m.required]
    optional = [m for m in members if not m.required]
    if required:
        listed = f" {COMMA} ".join(m.kv for m in required)
        return gbnf.sequence(['"{" space', listed, _rest(b, optional, name), 'space "}"'])
    # No required member: the first one present has no comma before it.
    firsts = [gbnf.sequence([m.kv, _rest(b, optional[i if m.repeated else i + 1:], name)])
              for i, m in enumerate(optional)]
    return gbnf.sequence(['"{" space', f"( {gbnf.alternatives(firsts)} )?", 'space "}"'])


def _rest(b: Builder, items: list[_Member], name: str) -> str:
    """Each of `items` optionally, in order, each after a comma; chained through rules so that
    the grammar grows linearly with the number of optional properties."""
    if not items:
        return ""
    first = items[0]
    head = f"( {COMMA} {first.kv} )" + ("*" if first.repeated else "?")
    if len(items) == 1:
        return head
    return b.add_rule(f"{child_name(name, first.label)}-rest",
                      gbnf.sequence([head, _rest(b, items[1:], name)]))


# -- arrays -------------------------------------------------------------------------------
def array_body(b: Builder, schema: Mapping[str, Any], name: str, where: str) -> str:
    """As llama.cpp reads an array schema: `items` wins over `prefixItems`; an array of
    schemas is a tuple of exactly those items (minItems, maxItems and additionalItems have no
    effect on it), one schema is every item's."""
    key = "items" if "items" in schema else "prefixItems"
    items = schema.get(key, True)
    if isinstance(items, list):
        b.primitive("space")
        b.depth += 1
        try:
            fixed = [b.visit(s, child_name(name, f"tuple-{i}"), f"{where}/{key}/{i}")
                     for i, s in enumerate(items)]
        finally:
            b.depth -= 1
        return gbnf.sequence(['"[" space', f" {COMMA} ".join(fixed), 'space "]"'])
    lo, hi = count(schema, "minItems", where) or 0, count(schema, "maxItems", where)
    if hi is not None and hi < lo:
        raise SchemaError(f"{where}: maxItems {hi} is below minItems {lo}")
    if isinstance(items, Mapping) and not items:
        items = True
    if items is True and lo == 0 and hi is None:
        return b.primitive("array")
    b.primitive("space")
    b.depth += 1
    try:
        item = b.visit(items, child_name(name, "item"), f"{where}/{key}")
    finally:
        b.depth -= 1
    if hi == 0:
        return '"[" space space "]"'
    more = gbnf.repeat(f"{COMMA} {item}", max(lo - 1, 0), None if hi is None else hi - 1, where)
    elements = gbnf.sequence([item, more])
    return gbnf.sequence(['"[" space', elements if lo else f"( {elements} )?", 'space "]"'])
