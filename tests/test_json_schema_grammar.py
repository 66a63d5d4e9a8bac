"""JSON Schema -> GBNF (service.json_schema_grammar), checked by llama.cpp itself.

Every grammar must parse in llama.cpp's grammar parser; llama.cpp's grammar sampler decides
which texts a grammar accepts (grammar_harness); and the tiny random model, sampling under a
grammar until its end-of-generation token, must write JSON that `jsonschema` validates.
"""

from __future__ import annotations

import calendar
import json
import re
import uuid
from typing import Any

import jsonschema
import pytest
from google.protobuf import json_format, struct_pb2
from grammar_harness import GrammarRunner

from native import paths
from service.json_schema_grammar import (
    SchemaError,
    grammar_for_request_schema,
    json_object_grammar,
    schema_to_grammar,
)

POINT = {"type": "object", "properties": {"x": {"type": "integer", "minimum": 0, "maximum": 9},
                                          "y": {"type": "integer", "minimum": 0, "maximum": 9}},
         "required": ["x", "y"]}
TREE = {"$defs": {"node": {"type": "object", "properties": {
    "v": {"type": "boolean"},
    "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2}},
    "required": ["v"]}}, "$ref": "#/$defs/node"}

# One schema per feature (and some mixes); each must become a grammar llama.cpp parses.
SCHEMAS: dict[str, Any] = {
    "true": True,
    "empty": {},
    "boolean": {"type": "boolean"},
    "null": {"type": "null"},
    "number": {"type": "number"},
    "integer": {"type": "integer"},
    "integer-range": {"type": "integer", "minimum": -15, "maximum": 1234},
    "integer-exclusive": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 100},
    "integer-min-only": {"type": "integer", "minimum": 7},
    "integer-max-only": {"type": "integer", "maximum": -3},
    "string": {"type": "string"},
    "string-length": {"type": "string", "minLength": 1, "maxLength": 10},
    "string-pattern": {"type": "string", "pattern": r"^[A-Z]{2}-\d{3}(\.[a-z]+)?$"},
    "pattern-unanchored": {"type": "string", "pattern": "ab+c"},
    "pattern-quotes": {"type": "string", "pattern": r'^"[^"\\]*"|x\ty$'},
    "pattern-groups": {"type": "string", "pattern": r"^(?:(?<y>\d{4})|[a-f]{1,3}?)*?z$"},
    "pattern-empty-options": {"type": "string", "pattern": "^(a|){2}(|b|)c$"},
    "format-date": {"type": "string", "format": "date"},
    "format-time": {"type": "string", "format": "time"},
    "format-date-time": {"type": "string", "format": "date-time"},
    "format-uuid": {"type": "string", "format": "uuid"},
    "format-other": {"type": "string", "format": "email"},
    "enum": {"enum": ["red", "green", 3, None, True, {"a": [1, "é"]}]},
    "enum-typed": {"type": "string", "enum": ["a", 1, "b"]},
    "const": {"const": "fixed \"value\"\n"},
    "type-list": {"type": ["string", "null"], "maxLength": 3},
    "object": {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "number"},
                                                "c": {"type": "boolean"}}, "required": ["b"]},
    "object-all-optional": {"type": "object", "properties": {"a": {}, "b": {}, "c": {}}},
    "object-any": {"type": "object"},
    "additional-true": {"type": "object", "properties": {"id": {"type": "integer"}},
                        "required": ["id"], "additionalProperties": True},
    "additional-schema": {"type": "object", "additionalProperties": {"type": "number"}},
    "required-undeclared": {"type": "object", "required": ["k"]},
    "property-names": {"type": "object", "properties": {
        "first name": {}, "string": {"type": "integer", "maximum": 3},
        "root": {"enum": [1, 2]}, "é\"\\": {}}},
    "array": {"type": "array", "items": {"type": "integer"}},
    "array-bounds": {"type": "array", "items": {"type": "string"}, "minItems": 2,
                     "maxItems": 5},
    "array-any": {"type": "array"},
    "prefix-items": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}],
                     "items": {"type": "boolean"}, "maxItems": 4},
    "tuple-draft7": {"type": "array", "items": [{"type": "null"}, {"type": "boolean"}]},
    "anyOf": {"anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 2}]},
    "oneOf-refs": {"definitions": {"a": {"const": 1}, "b": {"const": 2}},
                   "oneOf": [{"$ref": "#/definitions/a"}, {"$ref": "#/definitions/b"}]},
    "anyOf-with-base": {"type": "object", "properties": {"a": {}, "b": {}},
                        "anyOf": [{"required": ["a"]}, {"required": ["b"]}]},
    "allOf": {"allOf": [POINT, {"properties": {"z": {"type": "null"}}, "required": ["z"]}]},
    "allOf-ref": {"$defs": {"p": POINT}, "allOf": [{"$ref": "#/$defs/p"}, {"maxProperties": 3}]},
    "ref-defs": {"$defs": {"p": POINT}, "type": "array", "items": {"$ref": "#/$defs/p"}},
    "ref-recursive": TREE,
    "ref-root": {"type": "object", "properties": {"next": {"anyOf": [{"$ref": "#"},
                                                                     {"type": "null"}]}}},
    "pydantic": {"$defs": {"Pet": {"properties": {"name": {"title": "Name", "type": "string"},
                                                  "age": {"anyOf": [{"type": "integer"},
                                                                    {"type": "null"}],
                                                          "default": None}},
                                   "required": ["name"], "title": "Pet", "type": "object"}},
                 "properties": {"pets": {"items": {"$ref": "#/$defs/Pet"}, "type": "array",
                                         "uniqueItems": True}},
                 "required": ["pets"], "title": "Owner", "type": "object"},
}


def validate(schema: Any, value: Any) -> None:
    checker = jsonschema.FormatChecker(formats=())
    checker.checks("date")(_is_date)
    checker.checks("time")(_is_time)
    checker.checks("date-time")(_is_date_time)
    checker.checks("uuid")(lambda s: not isinstance(s, str) or bool(uuid.UUID(s)))
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError:  # `items` as an array: a draft-7 tuple
        cls = jsonschema.Draft7Validator
    cls(schema, format_checker=checker).validate(value)


def _is_date(s: object) -> bool:
    m = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)", s) if isinstance(s, str) else None
    if not m:
        return not isinstance(s, str)
    year, month, day = (int(g) for g in m.groups())
    return 1 <= month <= 12 and 1 <= day <= calendar.monthrange(year or 2000, month)[1]


def _is_time(s: object) -> bool:
    time = r"([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d+)?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)"
    return not isinstance(s, str) or bool(re.fullmatch(time, s))


def _is_date_time(s: object) -> bool:
    if not isinstance(s, str):
        return True
    date, sep, time = s.partition("T")
    return bool(sep) and _is_date(date) and _is_time(time)


# -- every feature parses in llama.cpp -----------------------------------------------------
@pytest.mark.parametrize("name", list(SCHEMAS))
def test_grammar_parses_in_llama_cpp(runner: GrammarRunner, name: str) -> None:
    grammar = schema_to_grammar(SCHEMAS[name])
    assert grammar.startswith("root ::= ")
    assert runner.parses(grammar), grammar
    assert schema_to_grammar(SCHEMAS[name]) == grammar  # deterministic


def test_json_object_and_request_grammars_parse(runner: GrammarRunner) -> None:
    assert runner.parses(json_object_grammar())
    assert grammar_for_request_schema({}) == json_object_grammar()  # llama-server: {} = object
    assert grammar_for_request_schema({"type": "integer"}) == schema_to_grammar(
        {"type": "integer"})
    assert schema_to_grammar({}) == schema_to_grammar(True) != json_object_grammar()


def test_layout_and_rule_names_follow_the_schema() -> None:
    grammar = schema_to_grammar({"type": "object", "properties": {
        "first name": {"type": "string", "maxLength": 4}, "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}}}, "required": ["age"]})
    assert grammar == (
        'root ::= "{" space age-kv first-name-rest space "}"\n'
        'age-kv ::= "\\"age\\"" space ":" space integer\n'
        'char ::= [^"\\\\\\x00-\\x1F\\x7F] | escape\n'
        'escape ::= "\\\\" ( ["\\\\bfnrt] | "u" [0-9a-fA-F]{4} )\n'
        'first-name ::= "\\"" char{0,4} "\\""\n'
        'first-name-kv ::= "\\"first name\\"" space ":" space first-name\n'
        'first-name-rest ::= ( "," space first-name-kv )? ( "," space tags-kv )?\n'
        'integer ::= "-"? integral-part\n'
        'integral-part ::= [0] | [1-9] [0-9]{0,15}\n'
        'space ::= | " " | "\\n"{1,2} [ \\t]{0,20}\n'
        'tags ::= "[" space ( tags-item ( "," space tags-item )* )? space "]"\n'
        'tags-item ::= "\\"a\\"" | "\\"b\\""\n'
        'tags-kv ::= "\\"tags\\"" space ":" space tags\n')
    names = re.findall(r"^(\S+) ::=", schema_to_grammar(SCHEMAS["ref-recursive"]), re.M)
    assert "ref-defs-node" in names and "ref-defs-node-kids-kv" in names
    names = re.findall(r"^(\S+) ::=", schema_to_grammar(SCHEMAS["property-names"]), re.M)
    assert {"string-", "root-", "first-name-kv"} <= set(names)  # primitives keep their names


def test_schema_from_a_protobuf_struct_converts_the_same() -> None:
    """The gRPC API carries json_schema as a Struct, whose numbers are all floats."""
    schema = {"type": "object", "properties": {
        "n": {"enum": [1, 2.5, -3]}, "s": {"type": "string", "minLength": 1, "maxLength": 4},
        "i": {"type": "integer", "minimum": 0, "maximum": 10},
        "a": {"type": "array", "items": {"const": 7}, "maxItems": 2}}, "required": ["n"]}
    struct = struct_pb2.Struct()
    struct.update(schema)
    as_dict = json_format.MessageToDict(struct)
    assert as_dict["properties"]["n"]["enum"] == [1.0, 2.5, -3.0]
    # (A Struct does not keep key order, so properties may come in another order.)
    assert schema_to_grammar(as_dict) == schema_to_grammar(_integers(as_dict))
    assert 'n ::= "1" | "2.5" | "-3"\n' in schema_to_grammar(as_dict)


def _integers(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _integers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integers(v) for v in value]
    return int(value) if isinstance(value, float) and value.is_integer() else value


# -- refused schemas -----------------------------------------------------------------------
@pytest.mark.parametrize(("schema", "message"), [
    (False, "allows no value"),
    ({"not": {"type": "string"}}, "'not'"),
    ({"type": "object", "if": {}, "then": {}}, "'if'"),
    ({"type": "object", "patternProperties": {"^x": {}}}, "'patternProperties'"),
    ({"type": "array", "contains": {"type": "integer"}}, "'contains'"),
    ({"properties": {"a": {"dependentRequired": {}}}}, "#/properties/a: 'dependentRequired'"),
    ({"$ref": "https://example.com/s.json"}, "only references into the same schema"),
    ({"$ref": "#/$defs/missing"}, "does not resolve"),
    ({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}, "refers back to itself"),
    ({"type": "tuple"}, "unknown type 'tuple'"),
    ({"type": "string", "minLength": -1}, "minLength must be a non-negative integer"),
    ({"type": "array", "minItems": 3, "maxItems": 2}, "maxItems 2 is below minItems 3"),
    ({"type": "integer", "minimum": 5, "maximum": 4}, "no integer lies between"),
    ({"enum": []}, "enum must be a non-empty array"),
    ({"type": "string", "pattern": r"^(a)\1$"}, "backreferences"),
    ({"type": "string", "pattern": "^(?=a)a$"}, "lookaround"),
    ({"type": "string", "pattern": r"^\bword$"}, r"word boundary \\b"),
    ({"type": "string", "pattern": r"^\p{L}$"}, "Unicode property"),
    ({"type": "string", "pattern": "^a(b$"}, "missing '\\)'"),
    ({"type": "string", "pattern": "^a|b)$"}, "unbalanced"),
    ({"type": "string", "pattern": "^[z-a]$"}, "out of order"),
    ({"type": "string", "pattern": "^(*a)$"}, "nothing to repeat"),
    ({"type": "string", "pattern": "^a**$"}, "nothing to repeat"),
    ({"type": "string", "pattern": "^*$"}, "quantified anchor"),
    ({"type": "string", "pattern": "^a(^b)$"}, "anchor inside"),
    ({"type": "string", "pattern": "^(a?)*$"}, "can match the empty string"),
    ({"type": "string", "pattern": "^a{3000}$"}, "exceeds llama.cpp's limit"),
    ({"const": float("nan")}, "no JSON form"),
])
def test_unsupported_schemas_raise_schema_error(schema: Any, message: str) -> None:
    with pytest.raises(SchemaError, match=message) as info:
        schema_to_grammar(schema)
    assert isinstance(info.value, ValueError)  # the service maps ValueError to INVALID_ARGUMENT


# -- which texts a grammar accepts (llama.cpp's grammar sampler decides) ----------------------
ACCEPTANCE: list[tuple[Any, list[str], list[str]]] = [
    ({"type": "integer", "minimum": -15, "maximum": 1234},
     ["-15", "-9", "0", "7", "10", "99", "100", "999", "1000", "1234"],
     ["-16", "1235", "2000", "01", "5.0", "12345"]),
    ({"type": "integer", "exclusiveMinimum": 9.5, "maximum": 20.7}, ["10", "20"], ["9", "21"]),
    ({"type": "object", "properties": {"a": {"type": "boolean"}, "b": {"type": "null"}},
      "additionalProperties": {"type": "integer"}},
     ['{}', '{"a": true}', '{"b": null, "x": 1}', '{"ab": 2, "": 3}', '{ "a":false, "b":null }'],
     ['{"a": 1}', '{"x": true}', '{"a": true, "a": true}', '{"b": null, "b": 1}',
      '{"a": true , "b": null}',  # no blank before a comma, as in llama-server's grammars
      '{"b": null, "a": true}']),  # valid JSON Schema, but properties come in schema order
    ({"type": "object", "properties": {"k": {"type": "integer"}}, "required": ["k"]},
     ['{"k": 1}', '{\n  "k": -2\n}'], ['{}', '{"k": 1, "z": 2}', '{"k": 1} ']),
    ({"type": "string", "pattern": r'^"[^"\\]*"|x\ty$'},
     ['"\\"abc\\""', '"\\"\\""', '"x\\ty"', '"\\"a\\"b"'],
     ['"\\"a\\\\\\""', '"\\"a"', '"x y"']),
    ({"type": "string", "pattern": "ab+c"}, ['"abc"', '"xxabbbc\\n"'], ['"ac"', '"ab"']),
    ({"type": "string", "pattern": r"^[A-Z]{2}-\d{3}(\.[a-z]+)?$"},
     ['"AB-123"', '"ZZ-000.x"'], ['"A-123"', '"AB-12"', '"AB-123."', '"ab-123"']),
    ({"type": "string", "format": "date"}, ['"2024-02-29"', '"1999-12-31"'],
     ['"2024-13-01"', '"2024-00-10"', '"2024-01-32"', '"2024-1-01"']),
    ({"type": "string", "format": "date-time"},
     ['"2024-02-29T23:59:59Z"', '"2024-01-01T00:00:00.123+05:30"'],
     ['"2024-01-01T24:00:00Z"', '"2024-01-01 00:00:00Z"', '"2024-01-01T00:00:00"']),
    ({"type": "string", "minLength": 2, "maxLength": 3},
     ['"ab"', '"a\\nb"', '"\\u00e9t\\u00e9"', '"日本語"'], ['"a"', '"abcd"', '"a\nb"']),
    ({"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 2},
     ["[true]", "[ false, true ]"], ["[]", "[true,true,true]", "[1]"]),
    ({"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}]},
     ['[1, "a"]'], ['[1, "a", 2]', '["a", 1]',
                    "[1]"]),  # valid JSON Schema, but a tuple is written in full
    ({"type": ["integer", "null"]}, ["12", "null"], ['"12"', "true"]),
    ({"enum": ["a", 1, None, {"x": [True]}]}, ['"a"', "1", "null", '{"x":[true]}'],
     ['"b"', '{"x": [true]}']),
    (SCHEMAS["ref-recursive"], ['{"v": true, "kids": [{"v": false, "kids": []}]}'],
     ['{"v": true, "kids": [{"kids": []}]}']),
    (True, ['{"a": [1, -2.5e3, "x", null, true, {}]}', '"s"', "[]"], ["{a: 1}", "'s'"]),
]


# Where llama.cpp's language is not JSON Schema's, ours is llama.cpp's (the texts its grammar
# accepts, so greedy picks agree with llama-server's): accepted and refused texts.
LLAMA_LANGUAGE: list[tuple[Any, list[str], list[str]]] = [
    ({"type": "string"}, ['"a\\nb"', '"\\u00e9"'], ['"a\\/b"']),  # no \/ escape
    ({"type": "string", "format": "date"}, ['"2024-02-30"', '"2023-04-31"'], []),
    ({"type": "string", "format": "time"}, ['"10:00:00.123Z"'],
     ['"10:00:00.1Z"', '"10:00:00.123456Z"']),
    ({"type": "integer", "enum": ["a", 1]}, ['"a"', "1"], ["2"]),  # enums are not filtered
    ({"type": "integer", "minimum": -15, "maximum": 1234}, ["-0"], ["-16"]),
    # one bound only: after the bound's first digit the rest is a number of its own
    ({"type": "integer", "minimum": 105}, ["15", "104", "105", "9" * 16], ["5", "99"]),
    ({"type": "integer", "minimum": 2, "exclusiveMinimum": 7}, ["2"], ["1"]),  # minimum wins
    # anyOf is the alternatives alone, the keywords beside it are not merged in
    (SCHEMAS["anyOf-with-base"], ["{}", '{"c": 1}', "[1]"], []),
    # allOf: the members' properties, all required, no others; other members have no effect
    (SCHEMAS["allOf"], ['{"x": 1, "y": 2, "z": null}'], ['{"x": 1, "y": 2}', '{"z": null}']),
    ({"allOf": [{"type": "string"}, {"type": "integer"}]}, ["{}"], ['""', "1"]),
    ({"allOf": [{"properties": {"a": {"type": "null"}}},
                {"anyOf": [{"properties": {"b": {"type": "null"}}}, {"type": "null"}]}]},
     ['{"a": null}', '{"a": null, "b": null}'], ["{}", '{"b": null}']),
    ({"allOf": [{"enum": [1, 2, 3]}, {"enum": [2, 3, 4]}]}, ["2", "3"], ["1", "4"]),
    ({"type": "integer", "minimum": 5, "allOf": [{"properties": {"a": {}}}]}, ["7"], ["{}"]),
    ({"type": "object", "properties": {"a": {"type": "null"}}, "required": ["b"]},
     ["{}", '{"a": null}'], ['{"b": null}']),  # a required name not declared is ignored
    ({"type": "object", "properties": {"ab": {"type": "null"}}, "additionalProperties": True},
     ['{"abc": 1}', '{"x": 1}', '{"": 1}', '{"ab": null}'],
     ['{"a": 1}', '{"ab": 1}']),  # an extra key must not be a declared name or its prefix
    ({"type": "array", "prefixItems": [{"type": "null"}], "items": {"type": "boolean"}},
     ["[true, false]", "[]"], ["[null]"]),  # items wins over prefixItems
    ({"type": "array", "items": [{"type": "null"}], "minItems": 3}, ["[null]"],
     ["[null, 1, 2]"]),  # a tuple is its items, whatever minItems says
]


@pytest.mark.slow
@pytest.mark.parametrize(("schema", "good", "bad"), LLAMA_LANGUAGE)
def test_grammar_accepts_llama_cpps_language(runner: GrammarRunner, schema: Any,
                                             good: list[str], bad: list[str]) -> None:
    grammar = schema_to_grammar(schema)
    for text in good:
        assert runner.accepts(grammar, text), (text, grammar)
    for text in bad:
        assert not runner.accepts(grammar, text), (text, grammar)


@pytest.mark.slow
@pytest.mark.parametrize(("schema", "good", "bad"), ACCEPTANCE)
def test_grammar_accepts_exactly_the_valid_texts(runner: GrammarRunner, schema: Any,
                                                 good: list[str], bad: list[str]) -> None:
    grammar = schema_to_grammar(schema)
    for text in good:
        validate(schema, json.loads(text))  # the sample itself is right
        assert runner.accepts(grammar, text), (text, grammar)
    for text in bad:
        assert not runner.accepts(grammar, text), (text, grammar)


# -- what the model writes under a grammar is valid ------------------------------------------
GENERATED: dict[str, Any] = {
    "boolean": {"type": "boolean"},
    "enum": {"enum": ["red", "green", "blue", None]},
    "integer-range": {"type": "integer", "minimum": -5, "maximum": 42},
    "string-length": {"type": "string", "minLength": 1, "maxLength": 6},
    "pattern": {"type": "string", "pattern": r"^[A-Z]{2}-\d{3}$"},
    "date": {"type": "string", "format": "date"},
    "uuid": {"type": "string", "format": "uuid"},
    "type-list": {"type": ["boolean", "null"]},
    "array": {"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 3},
    "tuple": {"type": "array", "prefixItems": [{"type": "boolean"}, {"enum": [1, 2]},
                                               {"type": "null"}]},
    "object": {"type": "object", "properties": {
        "ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0, "maximum": 9},
        "tag": {"enum": ["a", "b", None]}, "s": {"type": "string", "maxLength": 3}},
        "required": ["ok", "n"], "additionalProperties": False},
    "refs": {"$defs": {"p": POINT}, "type": "array", "items": {"$ref": "#/$defs/p"},
             "minItems": 1, "maxItems": 2},
    "anyOf": {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 0, "maximum": 99},
                        {"const": "none"}]},
    "allOf": {"allOf": [{"type": "object", "properties": {"a": {"type": "boolean"}},
                         "required": ["a"]},
                        {"properties": {"b": {"type": "null"}}, "required": ["b"]}]},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(GENERATED))
def test_generated_json_validates_against_the_schema(runner: GrammarRunner, name: str) -> None:
    schema = GENERATED[name]
    seed = sorted(GENERATED).index(name) + 1
    text = runner.generate(schema_to_grammar(schema), seed=seed, budget=200)
    assert text is not None, "the grammar never completed"
    validate(schema, json.loads(text))


# llama.cpp's language, not JSON Schema's (LLAMA_LANGUAGE): `items` wins over prefixItems, an
# anyOf is its alternatives alone.
NOT_JSON_SCHEMAS_LANGUAGE = {"prefix-items", "anyOf-with-base"}


@pytest.mark.slow
def test_random_texts_of_every_grammar_validate(runner: GrammarRunner) -> None:
    """Random walks through each feature's grammar (fixed logits, no decoding: cheap) give
    JSON valid for the schema whenever they finish within the budget."""
    finished = 0
    for i, (name, schema) in enumerate(SCHEMAS.items()):
        if name in NOT_JSON_SCHEMAS_LANGUAGE:
            continue
        text = runner.walk(schema_to_grammar(schema), seed=i, budget=48)
        if text is not None:
            finished += 1
            assert _valid(schema, text), (name, text)
    assert finished >= len(SCHEMAS) // 2


# -- llama.cpp's own converter tests as a reference ------------------------------------------
# tests/test-json-schema-to-grammar.cpp in the pinned source: each case is a schema, whether
# llama.cpp converts it, and the grammar it gives. Read at test time, not copied.
_CASE = re.compile(r'test\(\{\s*(SUCCESS|FAILURE),\s*"((?:[^"\\]|\\.)*)",\s*'
                   r'R"""\((.*?)\)""",\s*(?:R"""\((.*?)\)"""|"")', re.S)
LLAMA_CASES: dict[str, tuple[bool, Any, str]] = {
    name: (status == "SUCCESS", json.loads(schema),
           "".join(line.strip() + "\n" for line in grammar.strip().splitlines()))
    for status, name, schema, grammar in _CASE.findall(
        (paths.source_dir() / "tests" / "test-json-schema-to-grammar.cpp").read_text())
}
# Where we differ from llama.cpp on purpose.
LLAMA_DIFFERENCES = {
    # llama.cpp falls back to any string (with a warning); we refuse the pattern.
    "unsupported regexp in a property": "refused",
    # llama.cpp writes the pattern's quote raw into the JSON string (invalid JSON).
    "regexp quote": "we escape it",
    # llama.cpp names the "" property's value rule `root`, replacing the real root.
    "optional props with empty name": "llama.cpp's root is wrong",
}
# Cases with short outputs, for the differential test below.
LLAMA_COMPARED = [
    "min 3", "max 30", "min -123", "min 15 max 300", "min -10 max 10", "boolean",
    "string w/ min & max length", "non-string enum", "maxItems 2",
    "min + max items with min + max values across zero", "regexp escapes",
    "regexp with top-level alternation", "regexp with non-capturing group",
    "1 optional prop", "N optional props", "optional props with common prefix", "anyOf $ref",
    "allOf with multiple enum schemas", "conflicting names",
]


def test_llama_cpp_corpus_was_read() -> None:
    assert len(LLAMA_CASES) >= 70
    assert set(LLAMA_DIFFERENCES) | set(LLAMA_COMPARED) <= set(LLAMA_CASES)


@pytest.mark.parametrize("name", list(LLAMA_CASES))
def test_llama_cpp_corpus_converts_alike(runner: GrammarRunner, name: str) -> None:
    """Schemas llama.cpp converts, we convert to a grammar llama.cpp parses; schemas it
    rejects, we reject."""
    ok, schema, _ = LLAMA_CASES[name]
    if not ok or LLAMA_DIFFERENCES.get(name) == "refused":
        with pytest.raises(SchemaError):
            schema_to_grammar(schema)
    else:
        assert runner.parses(schema_to_grammar(schema))


@pytest.mark.slow
@pytest.mark.parametrize("name", LLAMA_COMPARED)
def test_llama_cpp_grammar_and_ours_accept_the_same_texts(runner: GrammarRunner,
                                                           name: str) -> None:
    """A random text of either grammar (llama.cpp's expected one, or ours) is accepted by the
    other exactly when it is valid for the schema."""
    _, schema, theirs = LLAMA_CASES[name]
    ours = schema_to_grammar(schema)
    compared = 0
    for seed in (1, 2):
        for source, other in ((theirs, ours), (ours, theirs)):
            text = runner.walk(source, seed, budget=60)
            if text is None:
                continue
            compared += 1
            assert runner.accepts(other, text) == _valid(schema, text), text
    assert compared >= 2


def _valid(schema: Any, text: str) -> bool:
    try:
        validate(schema, json.loads(text))
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


LLAMA_INTEGER_CASES = [n for n, (ok, s, _) in LLAMA_CASES.items()
                       if ok and isinstance(s, dict) and s.get("type") == "integer"]


@pytest.mark.slow
@pytest.mark.parametrize("name", LLAMA_INTEGER_CASES)
def test_integer_bounds_agree_with_llama_cpp(runner: GrammarRunner, name: str) -> None:
    """Around each bound (where random texts rarely go), both grammars accept exactly the
    integers the schema allows."""
    _, schema, theirs = LLAMA_CASES[name]
    ours = schema_to_grammar(schema)
    bounds = [int(schema[k]) for k in ("minimum", "maximum") if k in schema]
    numbers = {n + d for n in [*bounds, 0] for d in (-11, -10, -1, 0, 1, 10)}
    for n in sorted(numbers):
        valid = _valid(schema, str(n))
        assert runner.accepts(ours, str(n)) == valid, (n, ours)
        assert runner.accepts(theirs, str(n)) == valid, (n, theirs)
