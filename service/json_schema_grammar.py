"""JSON Schema -> GBNF grammar, for llama-server's `json_schema` and `response_format`.

    schema_to_grammar({"type": "object", "properties": {"n": {"type": "integer"}}})
    json_object_grammar()                  # response_format {"type": "json_object"}
    grammar_for_request_schema(schema)     # llama-server's rule: an empty schema is any object

The language each grammar accepts is llama.cpp's for the same schema (common/
json-schema-to-grammar.cpp), so that greedy sampling picks the same tokens as llama-server;
where that is not JSON Schema's, llama.cpp's wins: enum values are not filtered by `type`, a
`required` name missing from `properties` is not required, `items` wins over `prefixItems`, a
tuple is exactly its items (minItems, maxItems, additionalItems have no effect on it), an
additional property's key is neither a declared name nor a proper prefix of one.

Supported: true/{} (any value), type (one or a list), object properties/required/
additionalProperties (absent with properties: no others, as llama-server does), array items/
prefixItems/minItems/maxItems, enum, const, anyOf/oneOf and allOf (as llama.cpp reads them:
json_schema_combinators), $ref into the same document ("#/$defs/x", "#/definitions/x", "#"),
string minLength/maxLength/pattern (json_schema_regex) and format date/time/date-time/uuid,
integer minimum/maximum and their exclusive forms (json_schema_integers). Accepted but not
enforced, like llama-server: oneOf exclusivity, uniqueItems, multipleOf, number bounds,
minProperties/maxProperties, other formats, length limits next to a pattern, keywords beside
$ref, anyOf or oneOf. Refused with SchemaError (a ValueError):
keywords whose meaning a grammar cannot carry (`not`, if/then/else, patternProperties, ...),
remote $refs, malformed keyword values, a schema nested deeper than MAX_SCHEMA_DEPTH, and one
whose grammar would exceed grammar_limits (too large or too deep for llama.cpp's parser).

Output is deterministic: `root` first, then the other rules sorted by name; rule names come
from the property path (`address-street-kv`, `item`, `ref-defs-Node`) like llama-server's.
Objects write required properties first, then the optional ones, each in schema order.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from service import gbnf, limits
from service.grammar_limits import GrammarLimitError, check_grammar
from service.json_schema_combinators import all_of, alternatives_of, reads_all_of
from service.json_schema_containers import array_body, child_name, count, object_body
from service.json_schema_errors import SchemaError
from service.json_schema_integers import integer_range
from service.json_schema_literals import value_literal
from service.json_schema_primitives import PRIMITIVES, STRING_FORMATS
from service.json_schema_regex import pattern_to_gbnf

__all__ = ["SchemaError", "grammar_for_request_schema", "json_object_grammar",
           "schema_to_grammar"]

_REFUSED = {
    "not": "negation", "if": "conditionals", "then": "conditionals", "else": "conditionals",
    "dependentSchemas": "dependencies", "dependentRequired": "dependencies",
    "dependencies": "dependencies", "patternProperties": "property name patterns",
    "propertyNames": "property name schemas", "contains": "contains",
    "minContains": "contains", "maxContains": "contains",
    "unevaluatedProperties": "unevaluated properties", "unevaluatedItems": "unevaluated items",
    "$dynamicRef": "dynamic references", "$recursiveRef": "recursive references",
}
MAX_SCHEMA_DEPTH = 64
"""Subschemas converted one inside another: properties, items, anyOf alternatives and $ref
targets each count a level. The converter recurses 7 Python frames a level and the deepest
pattern (100 nested groups) takes 410 more: 851 frames for both at this limit (measured), inside
Python's recursion limit of 1,000 for a caller less than 149 frames deep (the server converts on
a worker thread, about 20); past that the RecursionError becomes a SchemaError too. Real schemas
nest 5 to 20 levels. (Over gRPC a google.protobuf.Struct cannot carry even 17 levels of nested
properties: protobuf's decoder stops at 100 nested messages. Deep conversion comes from $ref
chains, which are flat.)"""
_INVALID_RULE_CHARS = re.compile(r"[^A-Za-z0-9-]+")
_RESERVED = frozenset(PRIMITIVES) | {"root"}


def schema_to_grammar(schema: Mapping[str, Any] | bool) -> str:
    """A GBNF grammar (root rule `root`) for JSON text that `schema` allows, within
    grammar_limits (so the request path need not check it again)."""
    try:
        grammar = _Converter(schema).convert()
    except RecursionError:  # a backstop: MAX_SCHEMA_DEPTH should stop every deep schema first
        raise SchemaError("#: the schema nests too deeply to convert") from None
    try:
        check_grammar(grammar)
    except GrammarLimitError as e:
        raise SchemaError(f"#: the schema's grammar is beyond llama.cpp's safe limits: {e}") \
            from None
    return grammar


def json_object_grammar() -> str:
    """Any JSON object: response_format {"type": "json_object"} without a schema."""
    return schema_to_grammar({"type": "object"})


def grammar_for_request_schema(schema: Mapping[str, Any] | bool) -> str:
    """llama-server's handling of a request's json_schema: an empty schema means any object."""
    if isinstance(schema, Mapping) and not schema:
        return json_object_grammar()
    return schema_to_grammar(schema)


def rule_name(name: str) -> str:
    name = _INVALID_RULE_CHARS.sub("-", name) or "rule"
    return name + "-" if name in _RESERVED else name


class _Converter:
    def __init__(self, schema: Mapping[str, Any] | bool) -> None:
        self.root = schema
        self.rules: dict[str, str] = {}
        self.ref_rules: dict[str, str] = {"#": "root"}
        self.pending: dict[str, int] = {"#": 0}  # $ref -> depth at which its rule is building
        self.depth = 0  # objects and arrays entered: a $ref cycle must pass through one
        self.nesting = 0  # body() calls in progress: MAX_SCHEMA_DEPTH

    def convert(self) -> str:
        self.rules["root"] = ""
        self.rules["root"] = self.body(self.root, "", "#")
        others = sorted(k for k in self.rules if k != "root")
        return "".join(f"{k} ::= {self.rules[k]}\n" for k in ["root", *others])

    # -- rules ---------------------------------------------------------------------------
    def add_rule(self, name: str, body: str) -> str:
        """Register `name ::= body`; a taken name with another body gets a number suffix."""
        base = rule_name(name)
        candidate, n = base, 0
        while candidate in self.rules and self.rules[candidate] != body:
            n += 1
            candidate = f"{base}{n}"
        self.rules[candidate] = body
        return candidate

    def primitive(self, name: str) -> str:
        if name not in self.rules:
            self.rules[name] = PRIMITIVES[name].body
            for dep in PRIMITIVES[name].deps:
                self.primitive(dep)
        return name

    def visit(self, schema: Any, name: str, where: str) -> str:
        """A rule name for `schema`: a primitive's own name, or a new rule named `name`."""
        body = self.body(schema, name, where)
        if re.fullmatch(r"[A-Za-z0-9-]+", body):
            return body
        return self.add_rule(name, body)

    # -- schemas -------------------------------------------------------------------------
    def body(self, schema: Any, name: str, where: str) -> str:
        """The GBNF expression for `schema`; `name` prefixes the rules it needs."""
        max_depth = min(MAX_SCHEMA_DEPTH, limits.current().max_schema_depth)
        if self.nesting >= max_depth:
            raise SchemaError(f"{where}: the schema nests more than {max_depth} levels "
                              "deep (properties, items, anyOf alternatives and $ref targets "
                              "each count one)")
        self.nesting += 1
        try:
            return self.schema_body(schema, name, where)
        finally:
            self.nesting -= 1

    def schema_body(self, schema: Any, name: str, where: str) -> str:
        """body() one level down."""
        if schema is True:
            return self.primitive("value")
        if schema is False:
            raise SchemaError(f"{where}: the schema `false` allows no value")
        if not isinstance(schema, Mapping):
            raise SchemaError(f"{where}: a schema must be an object or a boolean, "
                              f"not {type(schema).__name__}")
        for key, what in _REFUSED.items():
            if key in schema:
                raise SchemaError(f"{where}: {key!r} ({what}) is not supported")
        if "$ref" in schema:
            return self.ref(schema["$ref"], where)
        alternatives = alternatives_of(schema, where)
        if alternatives is not None:
            if len(alternatives) == 1:
                return self.body(alternatives[0], name, where)
            return self.union(alternatives, name, where)
        kind = schema.get("type")
        if isinstance(kind, list):
            if not kind or not all(isinstance(k, str) for k in kind):
                raise SchemaError(f"{where}: type must be a string or a non-empty array of them")
            if len(kind) > 1:
                return self.union([{**schema, "type": k} for k in kind], name, where)
            kind = kind[0]
            schema = {**schema, "type": kind}
        if "const" in schema:
            return value_literal(schema["const"], where)
        if "enum" in schema:
            return self.enum(schema, where)
        if reads_all_of(schema):
            merged = all_of(self, schema, where)
            if isinstance(merged, str):
                return merged
            return self.body(merged, name, where)
        return self.typed(schema, kind or _implied_type(schema), name, where)

    def typed(self, schema: Mapping[str, Any], kind: Any, name: str, where: str) -> str:
        if kind == "object":
            return object_body(self, schema, name, where)
        if kind == "array":
            return array_body(self, schema, name, where)
        if kind == "string":
            return self.string(schema, name, where)
        if kind == "integer":
            return self.integer(schema, where)
        if kind in ("number", "boolean", "null"):
            return self.primitive(kind)
        if kind is None:
            return self.primitive("value")
        raise SchemaError(f"{where}: unknown type {kind!r}")

    def union(self, alternatives: list[Any], name: str, where: str) -> str:
        rules = [self.visit(alt, child_name(name, str(i)) if name else f"alternative-{i}",
                            f"{where}/anyOf/{i}") for i, alt in enumerate(alternatives)]
        return gbnf.alternatives(rules)

    def enum(self, schema: Mapping[str, Any], where: str) -> str:
        values = schema["enum"]
        if not isinstance(values, list) or not values:
            raise SchemaError(f"{where}: enum must be a non-empty array")
        # Every value, whatever `type` says: llama.cpp's converter does not filter them either.
        return gbnf.alternatives(value_literal(v, where) for v in values)

    def string(self, schema: Mapping[str, Any], name: str, where: str) -> str:
        quote = '"\\""'
        pattern = schema.get("pattern")
        if pattern is not None:
            if not isinstance(pattern, str):
                raise SchemaError(f"{where}: pattern must be a string")
            try:
                body = pattern_to_gbnf(pattern, name or "root", self.add_rule,
                                       self.primitive("char"))
            except SchemaError as e:
                raise SchemaError(f"{where}: {e}") from None
            return gbnf.sequence([quote, gbnf.group(body) if body else "", quote])
        fmt = schema.get("format")
        if isinstance(fmt, str) and fmt in STRING_FORMATS:
            return self.primitive(STRING_FORMATS[fmt])
        lo, hi = count(schema, "minLength", where), count(schema, "maxLength", where)
        if lo is None and hi is None:
            return self.primitive("string")
        chars = gbnf.repeat(self.primitive("char"), lo or 0, hi, where)
        return gbnf.sequence([quote, chars, quote])

    def integer(self, schema: Mapping[str, Any], where: str) -> str:
        lo, hi = _integer_bounds(schema, where)
        if lo is None and hi is None:
            return self.primitive("integer")
        return integer_range(lo, hi, where)

    # -- references ----------------------------------------------------------------------
    def ref(self, ref: Any, where: str) -> str:
        _check_local(ref, where)
        if ref in self.pending:
            if self.pending[ref] == self.depth:
                raise SchemaError(f"{where}: $ref {ref!r} refers back to itself before any "
                                  "object or array")
            return self.ref_rules[ref]
        if ref in self.ref_rules:
            return self.ref_rules[ref]
        target = self.resolve(ref, where)
        rule = self.add_rule("ref" + ref[1:], f"<building {ref}>")
        self.ref_rules[ref], self.pending[ref] = rule, self.depth
        self.rules[rule] = self.body(target, rule, ref)
        del self.pending[ref]
        return rule

    def resolve(self, ref: str, where: str) -> Any:
        """The subschema a "#/..." JSON pointer names."""
        _check_local(ref, where)
        node: Any = self.root
        for raw in ref[2:].split("/") if ref != "#" else ():
            token = unquote(raw).replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and token in node:
                node = node[token]
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
            else:
                raise SchemaError(f"{where}: $ref {ref!r} does not resolve ({token!r} is "
                                  "missing)")
        return node


def _check_local(ref: Any, where: str) -> None:
    if not isinstance(ref, str):
        raise SchemaError(f"{where}: $ref must be a string")
    if ref != "#" and not ref.startswith("#/"):
        raise SchemaError(f"{where}: $ref {ref!r} is not supported: only references into the "
                          "same schema (#/...) are")


def _implied_type(schema: Mapping[str, Any]) -> str | None:
    """The type a schema without `type` describes by its keywords, as llama-server infers it."""
    if "properties" in schema or schema.get("additionalProperties", True) is not True:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    if any(k in schema for k in ("pattern", "minLength", "maxLength")) or \
            schema.get("format") in STRING_FORMATS:
        return "string"
    return None


def _integer_bounds(schema: Mapping[str, Any], where: str) -> tuple[int | None, int | None]:
    def number(key: str) -> float | None:
        value = schema.get(key)
        if value is None or isinstance(value, bool):
            return None
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise SchemaError(f"{where}: {key} must be a finite number")
        return value

    # As llama.cpp reads them: `minimum` wins over `exclusiveMinimum` (so a draft-4 boolean
    # exclusiveMinimum beside it has no effect), fractions rounded inwards.
    lo: int | None = None
    hi: int | None = None
    if (v := number("minimum")) is not None:
        lo = math.ceil(v)
    elif (v := number("exclusiveMinimum")) is not None:
        lo = math.floor(v) + 1
    if (v := number("maximum")) is not None:
        hi = math.floor(v)
    elif (v := number("exclusiveMaximum")) is not None:
        hi = math.ceil(v) - 1
    return lo, hi
