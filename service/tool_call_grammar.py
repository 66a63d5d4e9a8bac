"""Grammars that force a chat answer to be tool calls in the template's format, each call's
arguments valid for that tool's JSON schema: for `tool_choice: "required"` or a named function,
and for the generic format under "auto" (a JSON object: the calls or a `response`, as
llama-server's generic format).

Each tool's schema becomes a grammar of its own (service.json_schema_grammar), whose rules are
renamed apart (`t3-...`) and joined under a root written per format.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from service.chat_parse_formats import (
    COMMAND_R7B,
    DEEPSEEK_R1,
    FIREFUNCTION_V2,
    FUNCTIONARY_V31,
    FUNCTIONARY_V32,
    GENERIC,
    HERMES,
    LLAMA3,
    LLAMA3_BUILTIN,
    MISTRAL_NEMO,
)
from service.engine.params import ParamError
from service.gbnf import literal
from service.grammar_limits import check_grammar
from service.json_schema_errors import SchemaError
from service.json_schema_grammar import grammar_for_request_schema

_TOKEN = re.compile(r'"(?:\\.|[^"\\])*"|\[(?:\\.|[^\]\\])*\]|\{[0-9,\s]*\}|([A-Za-z][\w-]*)')
_DS = {k: f"<\uff5c{k.replace('_', chr(0x2581))}\uff5c>" for k in
       ("tool_calls_begin", "tool_calls_end", "tool_call_begin", "tool_call_end", "tool_sep")}
_JSON_STRING = r'"\"" ( [^"\\\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} ) )* "\""'


@dataclass(frozen=True)
class ToolDef:
    name: str
    parameters: Mapping[str, Any]


def tool_defs(tools: Sequence[Mapping[str, Any]]) -> list[ToolDef]:
    """The request's tools (OpenAI JSON) with their schemas, each checked to compile to a
    grammar (ParamError naming the tool if not)."""
    defs = []
    for i, tool in enumerate(tools):
        function = tool.get("function") or {}
        name = str(function.get("name", ""))
        params = function.get("parameters") or {}
        if not name:
            raise ParamError(f"tools[{i}]: the function has no name", field="tools")
        defs.append(ToolDef(name, params))
        _args_grammar(defs[-1], i)
    return defs


def _args_grammar(tool: ToolDef, i: int) -> str:
    try:
        return grammar_for_request_schema(tool.parameters)
    except (SchemaError, ValueError) as e:
        raise ParamError(f"tools[{i}] ({tool.name!r}): its parameters schema cannot be used: "
                         f"{e}", field="tools") from None


def _renamed(grammar: str, prefix: str) -> str:
    def sub(m: re.Match[str]) -> str:
        return prefix + m.group(1) if m.group(1) else m.group(0)
    return _TOKEN.sub(sub, grammar)


def _compact(grammar: str, prefix: str) -> str:
    """At most one space between JSON tokens of the arguments: the schema converter allows
    newlines and indentation, which cost tokens (and a weak model may spend its budget on
    them)."""
    return re.sub(rf"^{prefix}space ::= .*$", f'{prefix}space ::= | " "', grammar,
                  flags=re.MULTILINE)


def _q(name: str) -> str:
    return literal(json.dumps(name))


def _call(fmt: str, name: str, args: str) -> str:
    """One call of `name` (its arguments: rule `args`) in `fmt`'s syntax."""
    n = _q(name)
    if fmt == HERMES:
        return (f'"<tool_call>\\n{{\\"name\\": " {n} ", \\"arguments\\": " {args} '
                '"}\\n</tool_call>"')
    if fmt in (LLAMA3, LLAMA3_BUILTIN):
        return f'"{{\\"name\\": " {n} ", \\"parameters\\": " {args} "}}"'
    if fmt == FUNCTIONARY_V31:
        return f'"<function=" {literal(name)} ">" {args} "</function>"'
    if fmt == FUNCTIONARY_V32:
        return f'{literal(name)} "\\n" {args}'
    if fmt == COMMAND_R7B:
        return (f'"{{\\"tool_call_id\\": \\"" [0-9] "\\", \\"tool_name\\": " {n} '
                f'", \\"parameters\\": " {args} "}}"')
    if fmt == DEEPSEEK_R1:
        return (f'{literal(_DS["tool_call_begin"] + "function" + _DS["tool_sep"] + name)} '
                f'"\\n```json\\n" {args} "\\n```" {literal(_DS["tool_call_end"])}')
    return f'"{{\\"name\\": " {n} ", \\"arguments\\": " {args} "}}"'


# The word that starts a call, per format, for a lazy grammar (tool_choice "auto"). A format
# missing here gets none (Functionary v3.2 starts every answer with its recipient line, the
# generic format's grammar is never lazy, a Llama 3.x call is a bare JSON object).
_TRIGGERS = {
    HERMES: "<tool_call>",
    FUNCTIONARY_V31: "<function=",
    MISTRAL_NEMO: "[TOOL_CALLS]",
    FIREFUNCTION_V2: " functools[",
    COMMAND_R7B: "<|START_ACTION|>",
    DEEPSEEK_R1: _DS["tool_calls_begin"],
}


def trigger_tokens(fmt: str, vocab: Any) -> tuple[int, ...]:
    """The token that starts a call in `fmt`, when the model's vocabulary has its word as one
    token (Qwen 2.5's <tool_call>, Mistral's [TOOL_CALLS]...); () otherwise, and then no lazy
    grammar: libllama's text-pattern triggers replay the whole token that completed the match
    into the grammar, and a token running past the word (`{$`) makes the grammar throw a C++
    exception through the C API, which ends the process."""
    word = _TRIGGERS.get(fmt)
    if word is None:
        return ()
    tokens = vocab.tokenize(word, add_special=False, parse_special=True)
    return (tokens[0],) if len(tokens) == 1 else ()


# format -> (before the calls, between calls, after them)
_FRAMES = {
    HERMES: ("", '"\\n"', ""),
    LLAMA3: ("", '"; "', ""),
    LLAMA3_BUILTIN: ("", '"; "', ""),
    FUNCTIONARY_V31: ("", "", ""),
    FUNCTIONARY_V32: ("", '">>>"', ""),
    MISTRAL_NEMO: ('"[TOOL_CALLS]["', '", "', '"]"'),
    FIREFUNCTION_V2: ('" functools["', '", "', '"]"'),
    COMMAND_R7B: ('"<|START_ACTION|>["', '", "', '"]<|END_ACTION|>"'),
    DEEPSEEK_R1: (literal(_DS["tool_calls_begin"]), '"\\n"', literal(_DS["tool_calls_end"])),
    GENERIC: ('"{\\"tool_calls\\": ["', '", "', '"]}"'),
}


def tool_call_grammar(fmt: str, tools: Sequence[ToolDef], parallel: bool,
                      allow_response: bool = False, prefix: str = "") -> str:
    """A grammar for one call (or, `parallel`, one or more) of `tools` in `fmt`;
    `allow_response`: the generic format's `{"response": "..."}` is allowed too; `prefix`:
    text forced first (e.g. the end of a thinking block the prompt opened)."""
    if not tools:
        raise ParamError("tool_choice asks for a tool call, but the request has no tools",
                         field="tool_choice")
    rules, alternatives = [], []
    for i, tool in enumerate(tools):
        rules.append(_compact(_renamed(_args_grammar(tool, i), f"t{i}-"), f"t{i}-"))
        alternatives.append(_call(fmt, tool.name, f"t{i}-root"))
    rules.append("tc-call ::= " + " | ".join(f"( {a} )" for a in alternatives))
    before, between, after = _FRAMES.get(fmt, _FRAMES[GENERIC])
    if fmt == GENERIC and not parallel:
        before, after = '"{\\"tool_call\\": "', '"}"'
    repeat = f" ( {between} tc-call )*" if parallel and between else (
        " tc-call*" if parallel else "")
    calls = " ".join(p for p in (before, "tc-call" + repeat, after) if p)
    body = calls
    if allow_response:
        rules.append(f"tc-string ::= {_JSON_STRING}")
        body = f'( {calls} ) | "{{\\"response\\": " tc-string "}}"'
    head = f"{literal(prefix)} " if prefix else ""
    grammar = f"root ::= {head}( {body} )\n" + "\n".join(rules) + "\n"
    check_grammar(grammar)
    return grammar
