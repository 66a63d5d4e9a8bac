"""service.grammar_limits (the limits a GBNF grammar must meet before libllama parses it) and the
JSON-schema converter's own limits: no model, no libllama (tests/test_grammar_limits_e2e.py has
those)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from native import paths
from service import grammar_limits
from service.grammar_limits import (
    MAX_ELEMENTS,
    MAX_GRAMMAR_BYTES,
    MAX_NESTING_DEPTH,
    MAX_RULE_CHAIN,
    GrammarLimitError,
    check_grammar,
)
from service.json_schema_containers import MAX_DECLARED_NAME
from service.json_schema_grammar import MAX_SCHEMA_DEPTH, SchemaError, schema_to_grammar


def nested(depth: int) -> str:
    """Issue 15's grammar: `depth` groups around one literal."""
    return "root ::= " + "(" * depth + '"a"' + ")" * depth


def named_chain(n: int) -> str:
    """root ::= r0, r0 ::= r1, ... : n + 2 rules, each the first symbol of the one before."""
    return ("root ::= r0\n" + "".join(f"r{i} ::= r{i + 1}\n" for i in range(n))
            + f'r{n} ::= "a"\n')


def chain_of(text: str) -> int:
    model = grammar_limits._RuleModel()
    model.read(text)
    return model.longest_left_chain()


def refused(text: str) -> str:
    with pytest.raises(GrammarLimitError) as info:
        check_grammar(text)
    assert isinstance(info.value, ValueError)  # INVALID_ARGUMENT / HTTP 400
    return str(info.value)


# -- size -----------------------------------------------------------------------------------------
def test_size_limit_counts_utf8_bytes() -> None:
    head = 'root ::= "'
    check_grammar(head + "a" * (MAX_GRAMMAR_BYTES - len(head) - 1) + '"')
    message = refused(head + "a" * (MAX_GRAMMAR_BYTES - len(head)) + '"')
    assert f"{MAX_GRAMMAR_BYTES + 1} bytes" in message and str(MAX_GRAMMAR_BYTES) in message
    # Fewer characters than the limit, more bytes: é is two bytes in UTF-8.
    assert f"{2 * (MAX_GRAMMAR_BYTES // 2 + 1) + len(head) + 1} bytes" in refused(
        head + "é" * (MAX_GRAMMAR_BYTES // 2 + 1) + '"')


# -- nesting --------------------------------------------------------------------------------------
def test_issue_15_grammar_is_refused_with_its_depth() -> None:
    message = refused(nested(60_000))
    assert "nests groups ( ... ) 60000 deep" in message
    assert f"the limit is {MAX_NESTING_DEPTH}" in message


def test_nesting_limit_is_exact() -> None:
    check_grammar(nested(MAX_NESTING_DEPTH))
    assert f"{MAX_NESTING_DEPTH + 1} deep" in refused(nested(MAX_NESTING_DEPTH + 1))


def test_depth_is_the_deepest_point_not_the_number_of_groups() -> None:
    side_by_side = "root ::= " + " ".join(['("a")'] * 5_000)
    check_grammar(side_by_side)
    check_grammar("root ::= x\n" + "".join(f'x{i} ::= ("a")\n' for i in range(3_000)))


@pytest.mark.parametrize("inert", [
    '"' + "(" * 5_000 + '"',  # a literal
    "[" + "(" * 5_000 + "]",  # a character class
    '"\\"' + "(" * 5_000 + '"',  # an escaped quote does not end the literal
    "[\\]" + "(" * 5_000 + "]",  # nor an escaped ] the class
    "<" + "(" * 5_000 + ">",  # a token
    '"a" # ' + "(" * 5_000 + "\n",  # a comment
])
def test_parentheses_in_literals_classes_tokens_and_comments_do_not_count(inert: str) -> None:
    check_grammar(f"root ::= {inert}")


def test_a_literal_ending_in_an_escaped_backslash_ends_there() -> None:
    assert "1001 deep" in refused('root ::= "\\\\" ' + "(" * 1_001 + '"a"' + ")" * 1_001)


def test_unbalanced_groups_still_count() -> None:
    # libllama recurses before it finds the missing `)`.
    assert "5000 deep" in refused("root ::= " + "(" * 5_000)


# -- chains of rules (the left-recursion check's depth) ------------------------------------------
def test_rule_chain_limit_is_exact() -> None:
    n = MAX_RULE_CHAIN - 2
    assert chain_of(named_chain(n)) == MAX_RULE_CHAIN
    check_grammar(named_chain(n))
    message = refused(named_chain(n + 1))
    assert f"chains {MAX_RULE_CHAIN + 1} rules" in message
    assert f"the limit is {MAX_RULE_CHAIN}" in message


def test_many_rules_of_nested_groups_are_one_long_chain() -> None:
    # 70 rules of 1,000 nested groups: each under the nesting limit, 141 KB in all, and a
    # 70,000-step chain that overflowed an 8 MiB stack in libllama's left-recursion check.
    grammar = ("root ::= r0\n" + "".join(
        f"r{i} ::= " + "(" * 1_000 + f"r{i + 1}" + ")" * 1_000 + "\n" for i in range(70))
        + 'r70 ::= "a"\n')
    assert len(grammar) < 150_000
    assert "chains 70072 rules" in refused(grammar)


@pytest.mark.parametrize(("grammar", "chain"), [
    # Leftmost symbols only: `"q"` first stops the chain.
    ("root ::= r0\n" + "".join(f'r{i} ::= "q" r{i + 1}\n' for i in range(5_000)) + 'r5000 ::= "a"',
     2),
    # Past a rule that may be empty (an empty alternative) the next symbol counts too.
    ('root ::= e f\ne ::= | "x"\nf ::= g\ng ::= "y"', 3),
    ('root ::= e f\ne ::= "x"\nf ::= g\ng ::= "y"', 2),
    # A group is a rule; `?` makes one more: S' ::= S | .
    ('root ::= (("a")?)', 4),
    # A repetition of something that may be empty chains its n - m generated rules.
    ('root ::= e{0,2000} "z"\ne ::= | "x"', 2_002),
    ('root ::= e{0,2000} "z"\ne ::= "x"', 3),
    ('root ::= e{5,2000} "z"\ne ::= | "x"', 1_997),
    # A left-recursive cycle (libllama refuses it itself) is bounded by its rules.
    ('root ::= a\na ::= b "x" | "y"\nb ::= | a', 3),
    ('root ::= root "a" | "b"', 1),
])
def test_chain_follows_libllamas_rules(grammar: str, chain: int) -> None:
    assert chain_of(grammar) == chain
    check_grammar(grammar)


def test_repetitions_of_empty_rules_add_up() -> None:
    grammar = 'root ::= a0\na0 ::= | a1{0,2000}\na1 ::= | a2{0,2000}\na2 ::= | "x"'
    assert "chains 4004 rules" in refused(grammar)


# -- repetitions ----------------------------------------------------------------------------------
@pytest.mark.parametrize("braces", ["{3,1}", "{1,0}", "{2000,1999}", "{ 5 , 4 }"])
def test_a_maximum_below_the_minimum_is_refused(braces: str) -> None:
    # libllama would generate rules until memory runs out.
    assert "the maximum is below the minimum" in refused(f'root ::= "a"{braces}')


@pytest.mark.parametrize("grammar", [
    'root ::= "a"{0,0} "b"', 'root ::= "a"{3} "b"{1,} "c"{0,2000}',
    'root ::= "a"{99999999999999999999}',  # libllama refuses it; no giant int here
    'root ::= "a"{2001,3000}',
    'root ::= {2,1}x',  # nothing to repeat: libllama refuses it, but the order check is first
])
def test_repetition_counts_are_read_safely(grammar: str) -> None:
    if "{2,1}" in grammar:
        refused(grammar)
    else:
        check_grammar(grammar)


def test_expanded_size_is_bounded() -> None:
    fits = MAX_ELEMENTS // 2000 - 10  # characters repeated 2,000 times
    check_grammar(f'root ::= "{"a" * fits}"{{2000}}')
    message = refused(f'root ::= "{"a" * (fits + 20)}"{{2000}}')
    assert f"over {MAX_ELEMENTS} elements" in message


def test_many_repetitions_in_one_rule_are_bounded_before_they_are_built() -> None:
    message = refused("root ::= " + ' "a"{2000}' * 3_000)  # 6 million elements, 33 KB
    assert "elements" in message


# -- real grammars pass ---------------------------------------------------------------------------
def _llama_grammars() -> Iterator[Path]:
    return iter(sorted((paths.source_dir() / "grammars").glob("*.gbnf")))


@pytest.mark.skipif(not (paths.source_dir() / "grammars").is_dir(),
                    reason="the llama.cpp source is extracted by scripts/setup.sh")
@pytest.mark.parametrize("path", list(_llama_grammars()) if (
    paths.source_dir() / "grammars").is_dir() else [], ids=lambda p: p.name)
def test_llama_cpps_grammars_pass(path: Path) -> None:
    text = path.read_text()
    check_grammar(text)
    assert chain_of(text) < 20


def big_schema(depth: int, width: int) -> dict[str, Any]:
    """An object of `width` properties of every kind, nested `depth` deep."""
    props: dict[str, Any] = {}
    for i in range(width):
        kind = i % 6
        if kind == 0 and depth > 0:
            props[f"field_{i}"] = big_schema(depth - 1, width)
        elif kind == 1:
            props[f"name_{i}"] = {"type": "string", "maxLength": 255}
        elif kind == 2:
            props[f"kind_{i}"] = {"enum": [f"value-{j}" for j in range(20)]}
        elif kind == 3:
            props[f"count_{i}"] = {"type": "integer", "minimum": 0, "maximum": 100_000}
        elif kind == 4:
            props[f"tags_{i}"] = {"type": "array", "maxItems": 10, "items": {
                "type": "string", "pattern": "^[a-z]{2,10}-[0-9]{3}$"}}
        else:
            props[f"when_{i}"] = {"type": "string", "format": "date-time"}
    return {"type": "object", "properties": props, "required": list(props)[:width // 2],
            "additionalProperties": {"type": "integer"}}


def test_a_large_schemas_grammar_is_well_within_the_limits() -> None:
    grammar = schema_to_grammar(big_schema(2, 18))  # about 75 KB
    model = grammar_limits._RuleModel()
    model.read(grammar)
    assert len(grammar) > 70_000
    assert model.max_depth < 20 and model.longest_left_chain() < 20
    assert model.elements < MAX_ELEMENTS // 20


# -- JSON schemas ---------------------------------------------------------------------------------
def nested_schema(levels: int, wrap: Any) -> Any:
    schema: Any = {"type": "string"}
    for _ in range(levels - 1):
        schema = wrap(schema)
    return schema


WRAPS = {
    "properties": lambda s: {"type": "object", "properties": {"a": s}, "required": ["a"]},
    "items": lambda s: {"type": "array", "items": s},
    "prefixItems": lambda s: {"type": "array", "prefixItems": [s]},
    "additionalProperties": lambda s: {"type": "object", "additionalProperties": s},
}


@pytest.mark.parametrize("kind", list(WRAPS))
def test_schema_depth_limit_is_exact(kind: str) -> None:
    grammar = schema_to_grammar(nested_schema(MAX_SCHEMA_DEPTH, WRAPS[kind]))
    check_grammar(grammar)
    with pytest.raises(SchemaError, match=f"nests more than {MAX_SCHEMA_DEPTH} levels deep"):
        schema_to_grammar(nested_schema(MAX_SCHEMA_DEPTH + 1, WRAPS[kind]))


def ref_chain(n: int, last: Any) -> dict[str, Any]:
    """$defs d0 -> d1 -> ... -> dn = `last`: a flat document converted n + 1 levels deep."""
    defs: dict[str, Any] = {f"d{i}": {"$ref": f"#/$defs/d{i + 1}"} for i in range(n)}
    defs[f"d{n}"] = last
    return {"$defs": defs, "$ref": "#/$defs/d0"}


def test_a_long_ref_chain_is_a_schema_error_not_a_recursion_error() -> None:
    check_grammar(schema_to_grammar(ref_chain(MAX_SCHEMA_DEPTH - 2, {"type": "integer"})))
    with pytest.raises(SchemaError, match=f"more than {MAX_SCHEMA_DEPTH} levels"):
        schema_to_grammar(ref_chain(MAX_SCHEMA_DEPTH - 1, {"type": "integer"}))
    with pytest.raises(SchemaError, match=f"more than {MAX_SCHEMA_DEPTH} levels") as info:
        schema_to_grammar(ref_chain(5_000, {"type": "integer"}))
    assert "#/$defs/d" in str(info.value)  # says where


def test_nested_anyof_is_a_schema_error() -> None:
    with pytest.raises(SchemaError, match=f"more than {MAX_SCHEMA_DEPTH} levels"):
        schema_to_grammar(nested_schema(200, lambda s: {"anyOf": [s, {"type": "null"}]}))
    with pytest.raises(SchemaError, match=f"more than {MAX_SCHEMA_DEPTH} levels"):
        schema_to_grammar(nested_schema(200, lambda s: {"anyOf": [
            {"type": "array", "items": s}, {"type": "null"}]}))


def frames() -> int:
    frame: FrameType | None = sys._getframe()
    n = 0
    while frame is not None:
        frame, n = frame.f_back, n + 1
    return n


def test_the_deepest_schema_leaves_python_frames_to_spare() -> None:
    # The deepest nesting, with the deepest pattern the regex converter allows (100 groups)
    # innermost, converts in 900 frames: 100 of Python's default 1,000 are left to the caller.
    schema = nested_schema(MAX_SCHEMA_DEPTH, WRAPS["properties"])
    innermost = schema
    while "properties" in innermost:
        innermost = innermost["properties"]["a"]
    innermost["pattern"] = "^" + "(a|" * 99 + "b" + ")" * 99 + "$"
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(frames() + 900)
    try:
        grammar = schema_to_grammar(schema)
    finally:
        sys.setrecursionlimit(limit)
    check_grammar(grammar)


def test_recursion_error_becomes_a_schema_error() -> None:
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(frames() + 60)
    try:
        with pytest.raises(SchemaError, match="nests too deeply to convert"):
            schema_to_grammar(nested_schema(30, WRAPS["properties"]))
    finally:
        sys.setrecursionlimit(limit)


def test_property_name_length_limit() -> None:
    def schema(n: int) -> dict[str, Any]:
        return {"type": "object", "properties": {"a" * n: {"type": "integer"}},
                "additionalProperties": True}

    check_grammar(schema_to_grammar(schema(MAX_DECLARED_NAME)))
    with pytest.raises(SchemaError, match=f"{MAX_DECLARED_NAME + 1} characters is too long"):
        schema_to_grammar(schema(MAX_DECLARED_NAME + 1))
    # Without additionalProperties the name is only a literal: no limit of its own.
    schema_to_grammar({"type": "object", "properties": {"a" * 5_000: {"type": "integer"}}})


def test_a_schema_whose_grammar_is_too_large_is_a_schema_error() -> None:
    schema = {"enum": [f"{i:04d}" + "x" * 1_000 for i in range(1_100)]}
    with pytest.raises(SchemaError, match=r"beyond llama\.cpp's safe limits: grammar is"):
        schema_to_grammar(schema)
