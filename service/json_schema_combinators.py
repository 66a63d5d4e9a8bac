"""anyOf, oneOf and allOf as llama.cpp's converter reads them (common/json-schema.cpp and
json-schema-to-grammar.cpp), so that our grammar accepts the same texts as llama-server's:

- oneOf (which wins when both are given) or anyOf: a union of the listed schemas alone; the
  keywords beside it are not merged in (`{"type": "object", "anyOf": [...]}` is the anyOf),
  and oneOf's exclusivity is not enforced;
- allOf, where llama.cpp reads it (a schema without a type and without properties, an object
  type without properties, or a string type; elsewhere it has no effect): an object whose
  members are the properties of every object member (a `$ref` followed), all of them required
  (those of an anyOf member's alternatives optional), no others; or, when members have an
  enum, the values every member lists.

Where a property is declared by two members the later schema is used, once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from service.json_schema_errors import SchemaError
from service.json_schema_literals import value_literal

_MAX_REF_HOPS = 64  # a $ref chain that long is a cycle


class Resolver(Protocol):
    def resolve(self, ref: str, where: str) -> Any: ...


def alternatives_of(schema: Mapping[str, Any], where: str) -> list[Any] | None:
    """The oneOf (else anyOf) list of a schema, checked; None without either."""
    key = "oneOf" if "oneOf" in schema else "anyOf" if "anyOf" in schema else None
    if key is None:
        return None
    alts = schema[key]
    if not isinstance(alts, list) or not alts:
        raise SchemaError(f"{where}/{key}: must be a non-empty array of schemas")
    return alts


def has_properties(schema: Mapping[str, Any]) -> bool:
    return "properties" in schema or (
        "additionalProperties" in schema and schema["additionalProperties"] is not True)


def reads_all_of(schema: Mapping[str, Any]) -> bool:
    """Whether llama.cpp builds this schema (no $ref, oneOf, anyOf, const, enum, type list)
    from its allOf."""
    if "allOf" not in schema:
        return False
    kind = schema.get("type")
    return kind == "string" or (kind in (None, "object") and not has_properties(schema))


def _kind(r: Resolver, schema: Any, where: str) -> tuple[str, Any]:
    """What llama.cpp makes of a schema, as far as allOf cares: ("object", schema),
    ("enum", values), ("union", alternatives) or ("other", None); $refs followed."""
    for _ in range(_MAX_REF_HOPS):
        if not isinstance(schema, Mapping):
            return "other", None
        if "$ref" not in schema:
            break
        ref = schema["$ref"]
        if not isinstance(ref, str):
            raise SchemaError(f"{where}: $ref must be a string")
        schema = r.resolve(ref, where)
    else:
        raise SchemaError(f"{where}: $ref chain too long (a cycle?)")
    alts = alternatives_of(schema, where)
    if alts is not None:
        return "union", alts
    kind = schema.get("type")
    if isinstance(kind, list) or "const" in schema:
        return "other", None
    if "enum" in schema:
        return "enum", schema["enum"]
    if reads_all_of(schema):
        return "other", None
    if kind == "object" or (kind is None and has_properties(schema)):
        return "object", schema
    return "other", None


def all_of(r: Resolver, schema: Mapping[str, Any], where: str) -> Mapping[str, Any] | str:
    """The allOf of `schema` as llama.cpp reads it: an object schema to convert, or a GBNF
    alternation of the enum values every member lists."""
    members = schema["allOf"]
    if not isinstance(members, list) or not members:
        raise SchemaError(f"{where}/allOf: must be a non-empty array of schemas")
    props: dict[str, Any] = {}
    required: list[str] = []
    counts: dict[str, int] = {}

    def add(member: Any, is_required: bool, at: str) -> None:
        kind, body = _kind(r, member, at)
        if kind == "object":
            declared = body.get("properties", {})
            if not isinstance(declared, Mapping):
                raise SchemaError(f"{at}: properties must be an object")
            for prop, sub in declared.items():
                props.pop(prop, None)
                props[prop] = sub
                if is_required and prop not in required:
                    required.append(prop)
        elif kind == "enum":
            if not isinstance(body, list) or not body:
                raise SchemaError(f"{at}: enum must be a non-empty array")
            for value in body:
                literal = value_literal(value, at)
                counts[literal] = counts.get(literal, 0) + 1

    for i, member in enumerate(members):
        at = f"{where}/allOf/{i}"
        # an anyOf written here (not behind a $ref) lends its alternatives' properties
        alts = alternatives_of(member, at) \
            if isinstance(member, Mapping) and "$ref" not in member else None
        if alts is not None:
            for j, alt in enumerate(alts):
                add(alt, False, f"{at}/anyOf/{j}")
        else:
            add(member, True, at)
    common = [lit for lit, n in counts.items() if n == len(members)]
    if common:
        return " | ".join(common)
    return {"type": "object", "properties": props, "required": required,
            "additionalProperties": False}
