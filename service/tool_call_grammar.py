"""Grammars that force a chat answer to be tool calls in the template's format, each call's
arguments valid for that tool's JSON schema: for `tool_choice: "required"` or a named function,
and for the generic format under "auto" (a JSON object: the calls or a `response`, as
llama-server's generic format), and under "auto" in the native formats once a call starts
(lazy_triggers: service.engine.lazy_grammar applies the grammar from the trigger on).

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
    BUILTIN_TOOLS,
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
from service.engine.lazy_grammar import Trigger
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


def _llama3_loose(name: str, args: str) -> str:
    """A Llama 3.x call as its trigger pattern and our parser take it (some whitespace, the
    optional `"type": "function"`, `parameters` or `arguments`): the lazy grammar must accept
    the text that triggered it."""
    return ('"{" tc-sp ( "\\"type\\"" tc-sp ":" tc-sp "\\"function\\"" tc-sp "," tc-sp )? '
            f'"\\"name\\"" tc-sp ":" tc-sp {_q(name)} tc-sp "," tc-sp '
            '( "\\"parameters\\"" | "\\"arguments\\"" ) tc-sp ":" tc-sp '
            f'{args} tc-sp "}}"')


# The word that starts a call, per format, for a lazy grammar (tool_choice "auto"), as
# llama.cpp's trigger words; Llama 3.x and Functionary v3.2 have patterns (lazy_triggers), the
# generic format's grammar is never lazy.
_TRIGGERS = {
    HERMES: "<tool_call>",
    FUNCTIONARY_V31: "<function=",
    MISTRAL_NEMO: "[TOOL_CALLS]",
    FIREFUNCTION_V2: " functools[",
    COMMAND_R7B: "<|START_ACTION|>",
    DEEPSEEK_R1: _DS["tool_calls_begin"],
}
# A Llama 3.x call is a bare JSON object that starts the answer (llama.cpp's pattern).
_LLAMA3_CALL = r'\s*(\{\s*(?:"type"\s*:\s*"function"\s*,\s*)?"name"\s*:\s*")'
# Functionary v3.2's recipient line names a function unless it is "all" (text): the first
# character that rules "all" out starts the call.
_NOT_ALL = r"((?:[^a\s]|a[^l]|al[^l]|all[^\n]))"


def lazy_triggers(fmt: str, tools: Sequence[ToolDef]) -> tuple[Trigger, ...]:
    """What starts a call of `fmt` in an answer under tool_choice "auto", for the lazy grammar
    of service.engine.lazy_grammar (the patterns llama.cpp uses per format); () for a format
    without (the generic one)."""
    if fmt in (LLAMA3, LLAMA3_BUILTIN):
        found = [Trigger(_LLAMA3_CALL, anchored=True)]
        if fmt == LLAMA3_BUILTIN and _python_tag_tools(tools):
            found.append(Trigger.word("<|python_tag|>"))
        return tuple(found)
    if fmt == FUNCTIONARY_V32:
        return Trigger(_NOT_ALL, anchored=True), Trigger(">>>" + _NOT_ALL)
    word = _TRIGGERS.get(fmt)
    return (Trigger.word(word),) if word else ()


def _python_tag_tools(tools: Sequence[ToolDef]) -> list[tuple[int, ToolDef]]:
    """Llama 3.1's builtin tools among `tools` (with their index), called as
    `<|python_tag|>name.call(key=value, ...)`; none when the code interpreter is one: it writes
    plain code there, which no grammar of ours constrains."""
    found = [(i, t) for i, t in enumerate(tools) if t.name in BUILTIN_TOOLS]
    return [] if any(t.name == "code_interpreter" for _, t in found) else found


def _builtin_calls(tools: Sequence[ToolDef], rules: list[str]) -> str:
    """`<|python_tag|>` and one builtin call (the schema's required properties, else all of
    them, in its order, each value as JSON for its schema), "" if there is none; their rules
    go to `rules`. A property schema that does not stand alone (a `$ref` into the tool's
    schema) leaves its tool out: such a call goes unconstrained."""
    alternatives = []
    for i, tool in _python_tag_tools(tools):
        props = tool.parameters.get("properties") or {}
        required = set(tool.parameters.get("required") or ())
        keys = [k for k in props if k in required] or list(props)
        parts, own = [], []
        try:
            for j, key in enumerate(keys):
                prefix = f"b{i}-{j}-"
                value = grammar_for_request_schema(props[key])
                own.append(_compact(_renamed(value, prefix), prefix))
                parts.append(f"{literal(key + '=')} {prefix}root")
        except (SchemaError, ValueError):
            continue
        rules += own
        alternatives.append(" ".join([literal(tool.name + ".call("), *_joined(parts), '")"']))
    if not alternatives:
        return ""
    return '"<|python_tag|>" ( ' + " | ".join(f"( {a} )" for a in alternatives) + " )"


def _joined(parts: list[str]) -> list[str]:
    out: list[str] = []
    for part in parts:
        out += ['", "', part] if out else [part]
    return out


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
                      allow_response: bool = False, prefix: str = "", lazy: bool = False) -> str:
    """A grammar for one call (or, `parallel`, one or more) of `tools` in `fmt`;
    `allow_response`: the generic format's `{"response": "..."}` is allowed too; `prefix`:
    text forced first (e.g. the end of a thinking block the prompt opened); `lazy`: for a
    lazy grammar (lazy_triggers), which in Llama 3.1's format also takes a builtin tool's
    `<|python_tag|>` call."""
    if not tools:
        raise ParamError("tool_choice asks for a tool call, but the request has no tools",
                         field="tool_choice")
    rules, alternatives = [], []
    for i, tool in enumerate(tools):
        rules.append(_compact(_renamed(_args_grammar(tool, i), f"t{i}-"), f"t{i}-"))
        loose = lazy and fmt in (LLAMA3, LLAMA3_BUILTIN)
        alternatives.append(_llama3_loose(tool.name, f"t{i}-root") if loose
                            else _call(fmt, tool.name, f"t{i}-root"))
    if lazy and fmt in (LLAMA3, LLAMA3_BUILTIN):
        rules.append("tc-sp ::= [ \\t\\n]{0,16}")
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
    builtin = _builtin_calls(tools, rules) if lazy and fmt == LLAMA3_BUILTIN else ""
    if builtin:
        body = f"( {body} ) | {builtin}"
    head = f"{literal(prefix)} " if prefix else ""
    grammar = f"root ::= {head}( {body} )\n" + "\n".join(rules) + "\n"
    check_grammar(grammar)
    return grammar
