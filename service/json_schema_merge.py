"""allOf, and anyOf/oneOf beside other keywords, rewritten as a plain union of schemas.

A grammar cannot intersect languages, so `allOf` is merged keyword by keyword into one schema
(properties and required lists unite, bounds tighten, types and enums intersect), and
`{"type": "object", "anyOf": [A, B]}` becomes `anyOf: [base+A, base+B]`. Alternatives that
contradict the rest (an anyOf branch of another type) drop out. Keywords that cannot be merged
(two different patterns) raise SchemaError. oneOf is treated as anyOf: exclusivity is not
enforced.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

from service.json_schema_errors import SchemaError

Schema = Mapping[str, Any] | bool
Resolve = Callable[[str, str], Any]  # ($ref, where) -> the schema it points at

COMBINATORS = ("allOf", "anyOf", "oneOf")
ANNOTATIONS = frozenset({
    "title", "description", "default", "examples", "example", "$schema", "$id", "$comment",
    "$anchor", "$defs", "definitions", "deprecated", "readOnly", "writeOnly",
    "contentEncoding", "contentMediaType", "contentSchema", "discriminator",
})
_LOWER_BOUNDS = frozenset({"minimum", "exclusiveMinimum", "minLength", "minItems",
                           "minProperties"})
_UPPER_BOUNDS = frozenset({"maximum", "exclusiveMaximum", "maxLength", "maxItems",
                           "maxProperties"})
_SUBSCHEMAS = frozenset({"items", "additionalProperties", "additionalItems"})
_MAX_ALTERNATIVES = 64
_MAX_DEPTH = 32


class _Conflict(Exception):
    """Two subschemas admit no common value."""


def union_of(schema: Mapping[str, Any], resolve: Resolve, where: str) -> list[Schema]:
    """`schema` (which has allOf/anyOf/oneOf) as alternatives without them at the top.

    A branch that needs no merging is returned as written, so a lone {"$ref": ...} stays a
    reference and keeps its shared rule.
    """
    alts = _expand(schema, resolve, where, 0)
    if not alts:
        raise SchemaError(f"{where}: no value satisfies all of its subschemas together")
    return alts


def _expand(schema: Any, resolve: Resolve, where: str, depth: int) -> list[Schema]:
    if depth > _MAX_DEPTH:
        raise SchemaError(f"{where}: allOf/anyOf/$ref nest too deeply (or recursively) to merge")
    if isinstance(schema, bool):
        return [True] if schema else []
    if not isinstance(schema, Mapping):
        raise SchemaError(f"{where}: a schema must be an object or a boolean")
    if not any(k in schema for k in COMBINATORS):
        return [schema]
    base = {k: v for k, v in schema.items() if k not in COMBINATORS}
    parts: list[list[Schema]] = [[base]] if set(base) - ANNOTATIONS else []
    for key in COMBINATORS:
        if key in schema:
            subs = schema[key]
            if not isinstance(subs, list) or not subs:
                raise SchemaError(f"{where}: {key} must be a non-empty array of schemas")
            expanded = [_expand(s, resolve, f"{where}/{key}/{i}", depth + 1)
                        for i, s in enumerate(subs)]
            if key == "allOf":
                parts.extend(expanded)
            else:
                parts.append([alt for alts in expanded for alt in alts])
    if len(parts) == 1:
        return parts[0]
    result: list[Schema] = [True]
    for part in parts:
        branches = [b for alt in part for b in _dereferenced(alt, resolve, where, depth)]
        result = [m for a, b in itertools.product(result, branches)
                  if (m := _merge(a, b, where)) is not None]
        if len(result) > _MAX_ALTERNATIVES:
            raise SchemaError(f"{where}: combining allOf/anyOf gives more than "
                              f"{_MAX_ALTERNATIVES} alternatives")
    return result


def _dereferenced(alt: Schema, resolve: Resolve, where: str, depth: int) -> list[Schema]:
    if isinstance(alt, Mapping) and "$ref" in alt:
        ref = alt["$ref"]
        return _expand(resolve(ref, where), resolve, str(ref), depth + 1)
    return [alt]


def _merge(a: Schema, b: Schema, where: str) -> Schema | None:
    if a is True:
        return b
    if b is True:
        return a
    assert isinstance(a, Mapping) and isinstance(b, Mapping)
    out = dict(a)
    try:
        for key, value in b.items():
            if key in out and out[key] != value:
                out[key] = _merge_keyword(key, out[key], value, where)
            else:
                out.setdefault(key, value)
    except _Conflict:
        return None
    return out


def _merge_keyword(key: str, a: Any, b: Any, where: str) -> Any:
    if key in ANNOTATIONS:
        return a
    if key == "type":
        return _merge_types(a, b)
    if key == "properties" and isinstance(a, Mapping) and isinstance(b, Mapping):
        return {name: {"allOf": [a[name], b[name]]} if name in a and name in b
                else a.get(name, b.get(name)) for name in [*a, *(n for n in b if n not in a)]}
    if key == "required" and isinstance(a, list) and isinstance(b, list):
        return list(dict.fromkeys([*a, *b]))
    if key == "enum" and isinstance(a, list) and isinstance(b, list):
        both = [v for v in a if v in b]
        if not both:
            raise _Conflict
        return both
    if key == "const":
        raise _Conflict
    if key in _SUBSCHEMAS and not isinstance(a, list) and not isinstance(b, list):
        if a is False or b is False:
            return False
        return b if a is True else a if b is True else {"allOf": [a, b]}
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b))
    if key in _LOWER_BOUNDS and numbers:
        return max(a, b)
    if key in _UPPER_BOUNDS and numbers:
        return min(a, b)
    raise SchemaError(f"{where}: allOf/anyOf combine different values of {key!r}, which "
                      "cannot be merged")


def _merge_types(a: Any, b: Any) -> Any:
    def as_set(t: Any) -> set[str]:
        return {t} if isinstance(t, str) else set(t) if isinstance(t, list) else set()
    ta, tb = as_set(a), as_set(b)
    common = ta & tb
    if ("integer" in ta and "number" in tb) or ("number" in ta and "integer" in tb):
        common.add("integer")
    ordered = [t for t in ([a] if isinstance(a, str) else a) if t in common]
    ordered += sorted(common - set(ordered))
    if not ordered:
        raise _Conflict
    return ordered[0] if len(ordered) == 1 else ordered
