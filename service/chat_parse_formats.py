"""The tool-call formats of llama-server's documentation ("Tool call support"), each as a
`Format` for service.chat_parse_machine, and how a chat template selects one.

The syntax of each is what its template teaches the model (the templates are in llama.cpp's
models/templates/). The selection looks for the markers in the template source that the
llama-server of the spec's README looked for, so each template of its table gets the format the
table names (tests/test_tool_parsers.py); the generic format (a JSON object with `tool_calls`
or `response`) is the fallback. The pinned llama.cpp derives a parser from any template by
rendering it differently (its "autoparser"); that is not reproduced here.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping

from service.chat_parse_core import WS, Part, Pattern, Str, Word
from service.chat_parse_machine import Alt, Format

GENERIC = "generic"
HERMES = "hermes 2 pro"
LLAMA3 = "llama 3.x"
LLAMA3_BUILTIN = "llama 3.x with builtin tools"
FUNCTIONARY_V31 = "functionary v3.1 llama 3.1"
FUNCTIONARY_V32 = "functionary v3.2"
MISTRAL_NEMO = "mistral nemo"
FIREFUNCTION_V2 = "firefunction v2"
COMMAND_R7B = "command r7b"
DEEPSEEK_R1 = "deepseek r1"
CONTENT_ONLY = "content only"

BUILTIN_TOOLS = ("wolfram_alpha", "web_search", "brave_search", "code_interpreter")


def _q(key: str) -> tuple[Part, ...]:
    """`"key" :` with optional whitespace around."""
    return (WS(), f'"{key}"', WS(), ":")


def _name_args(name_key: str = "name", args_keys: tuple[str, ...] = ("arguments",)) -> Pattern:
    """`{"name": "...", "arguments":` (the arguments' object follows)."""
    return Pattern(WS(), "{", *_q(name_key), WS(), Str("name"), WS(), ",", WS(),
                   Str("args_key", args_keys), WS(), ":")


def _object_end() -> Pattern:
    return Pattern(WS(), "}")


def _with(prefix: tuple[Part, ...], p: Pattern) -> Pattern:
    return Pattern(*prefix, *p.elements)


def _array_calls(name: str, trigger: str, open_: tuple[Part, ...], close: tuple[Part, ...],
                 header: Pattern, trailer: tuple[Pattern, ...]) -> Format:
    """`trigger` then a JSON array of call objects (Mistral Nemo, Firefunction, Command R7B)."""
    return Format(
        name,
        triggers={trigger: Alt(None, "goto", "first")},
        lists={
            "first": (Alt(_with(open_, header), "call", "trailer"),),
            "trailer": tuple(Alt(p, "goto", "after") for p in trailer),
            "after": (Alt(_with((WS(), ","), header), "call", "trailer"),
                      Alt(Pattern(WS(), *close), "content")),
        },
        closing=frozenset({"trailer", "after"}),
    )


def _hermes() -> Format:
    return Format(
        HERMES,
        triggers={"<tool_call>": Alt(None, "goto", "call")},
        lists={"call": (Alt(_name_args(), "call", "close"),),
               "close": (Alt(Pattern(WS(), "}", WS(), "</tool_call>"), "content"),)},
        closing=frozenset({"close"}),
    )


def _python_code(kind: str, text: str) -> tuple[str, str] | None:
    code = text.strip()
    return (kind, json.dumps({"code": code})) if code else None


def _builtin_call(kind: str, text: str) -> tuple[str, str] | None:
    """Llama 3.1's `<|python_tag|>name.call(key="value", ...)`, or plain code for the code
    interpreter."""
    code = text.strip()
    try:
        tree = ast.parse(code, mode="eval").body
    except SyntaxError:
        tree = None
    if (isinstance(tree, ast.Call) and isinstance(tree.func, ast.Attribute)
            and tree.func.attr == "call" and isinstance(tree.func.value, ast.Name)
            and not tree.args):
        try:
            args = {kw.arg: ast.literal_eval(kw.value) for kw in tree.keywords if kw.arg}
            return tree.func.value.id, json.dumps(args)
        except ValueError:
            pass
    return ("code_interpreter", json.dumps({"code": code})) if code else None


def _llama3(builtin: bool) -> Format:
    # {"name": "f", "parameters": {...}} or {"type": "function", "name": ...}
    lists = {
        "start": (Alt(_name_args(args_keys=("parameters", "arguments")), "call", "close"),
                  Alt(Pattern(WS(), "{", *_q("type"), WS(), '"function"', WS(), ",",
                              *_q("name"), WS(), Str("name"), WS(), ",", WS(),
                              Str("k", ("parameters", "arguments")), WS(), ":"),
                      "call", "close")),
        "close": (Alt(_object_end(), "goto", "more"),),
        "more": (Alt(_with((WS(), ";"), _name_args(args_keys=("parameters", "arguments"))),
                     "call", "close"),),
    }
    triggers = {"<|python_tag|>": Alt(None, "raw", "ipython")} if builtin else {}
    return Format(LLAMA3_BUILTIN if builtin else LLAMA3, triggers=triggers, lists=lists,
                  start="start", closing=frozenset({"close", "more"}),
                  raw_call=_builtin_call if builtin else None)


def _functionary_v31() -> Format:
    return Format(
        FUNCTIONARY_V31,
        triggers={"<function=": Alt(None, "goto", "name"),
                  "<|python_tag|>": Alt(None, "raw", "python")},
        lists={"name": (Alt(Pattern(Word("name", ">"), ">"), "call", "close"),),
               "close": (Alt(Pattern(WS(), "</function>"), "content"),)},
        closing=frozenset({"close"}),
        raw_call=_python_code,
    )


def _functionary_v32() -> Format:
    # The prompt ends with ">>>": the answer starts with a recipient line, "all" for text.
    segment = (Alt(Pattern("all\n"), "content"),
               Alt(Pattern("python\n"), "raw", "python"),
               Alt(Pattern(Word("name", "\n"), "\n"), "call", "next"))
    return Format(
        FUNCTIONARY_V32,
        triggers={">>>": Alt(None, "goto", "segment")},
        lists={"segment": segment, "next": (Alt(Pattern(WS(), ">>>"), "goto", "segment"),)},
        start="segment",
        closing=frozenset({"next"}),
        raw_call=_python_code,
    )


def _command_r7b() -> Format:
    header = Pattern(WS(), "{", *_q("tool_call_id"), WS(), Str("id"), WS(), ",",
                     *_q("tool_name"), WS(), Str("name"), WS(), ",", *_q("parameters"))
    fmt = _array_calls(COMMAND_R7B, "<|START_ACTION|>", (WS(), "["),
                       ("]", WS(), "<|END_ACTION|>"), header, (_object_end(),))
    triggers = {**fmt.triggers, "<|START_RESPONSE|>": Alt(None, "drop"),
                "<|END_RESPONSE|>": Alt(None, "drop")}
    return Format(fmt.name, triggers, fmt.lists, closing=fmt.closing)


_DS = {k: f"<\uff5c{k.replace('_', chr(0x2581))}\uff5c>" for k in
       ("tool_calls_begin", "tool_calls_end", "tool_call_begin", "tool_call_end", "tool_sep")}


def _deepseek_r1() -> Format:
    header = Pattern(WS(), _DS["tool_call_begin"], WS(), "function", WS(), _DS["tool_sep"],
                     Word("name", "\n"), "\n", WS(), "```json")
    return Format(
        DEEPSEEK_R1,
        triggers={_DS["tool_calls_begin"]: Alt(None, "goto", "first")},
        lists={"first": (Alt(header, "call", "close"),),
               "close": (Alt(Pattern(WS(), "```", WS(), _DS["tool_call_end"]), "goto",
                             "after"),),
               "after": (Alt(header, "call", "close"),
                         Alt(Pattern(WS(), _DS["tool_calls_end"]), "content"))},
        closing=frozenset({"close", "after"}),
    )


def _generic() -> Format:
    call = _name_args()
    trailer = (Alt(_object_end(), "goto", "after"),
               Alt(Pattern(WS(), ",", *_q("id"), WS(), Str("id"), WS(), "}"),
                   "goto", "after"))
    return Format(
        GENERIC,
        lists={
            "start": (Alt(_with((WS(), "{", *_q("tool_calls"), WS(), "["), call), "call",
                          "trailer"),
                      Alt(_with((WS(), "{", *_q("tool_call")), call), "call", "trailer1"),
                      Alt(Pattern(WS(), "{", *_q("response"), WS(), '"'), "string",
                          "close")),
            "trailer": trailer,
            "after": (Alt(_with((WS(), ","), call), "call", "trailer"),
                      Alt(Pattern(WS(), "]", WS(), "}"), "end")),
            "trailer1": tuple(Alt(a.pattern, "goto", "close") for a in trailer),
            "close": (Alt(_object_end(), "end"),),
        },
        start="start",
        closing=frozenset({"trailer", "after", "trailer1", "close"}),
    )


def _nemo_header() -> Pattern:
    return _name_args()


FORMATS: Mapping[str, Format] = {
    GENERIC: _generic(),
    HERMES: _hermes(),
    LLAMA3: _llama3(False),
    LLAMA3_BUILTIN: _llama3(True),
    FUNCTIONARY_V31: _functionary_v31(),
    FUNCTIONARY_V32: _functionary_v32(),
    MISTRAL_NEMO: _array_calls(
        MISTRAL_NEMO, "[TOOL_CALLS]", (WS(), "["), ("]",), _nemo_header(),
        (_object_end(), Pattern(WS(), ",", *_q("id"), WS(), Str("id"), WS(), "}"))),
    FIREFUNCTION_V2: _array_calls(
        FIREFUNCTION_V2, "functools[", (), ("]",), _nemo_header(), (_object_end(),)),
    COMMAND_R7B: _command_r7b(),
    DEEPSEEK_R1: _deepseek_r1(),
    CONTENT_ONLY: Format(CONTENT_ONLY),
}


def detect_format(source: str) -> str:
    """The tool-call format a chat template's source selects (llama-server's markers)."""
    if _DS["tool_calls_begin"] in source:
        return DEEPSEEK_R1
    if "<|END_THINKING|><|START_ACTION|>" in source:
        return COMMAND_R7B
    if ">>>all" in source:
        return FUNCTIONARY_V32
    if " functools[" in source:
        return FIREFUNCTION_V2
    if "<tool_call>" in source:
        return HERMES
    if "<|start_header_id|>" in source and "<function=" in source:
        return FUNCTIONARY_V31
    if "<|start_header_id|>ipython<|end_header_id|>" in source:
        return LLAMA3_BUILTIN if "<|python_tag|>" in source else LLAMA3
    if "[TOOL_CALLS]" in source:
        return MISTRAL_NEMO
    return GENERIC


def reasoning_tags(fmt: str) -> tuple[str, str]:
    """The thinking block's tags in a format's answers."""
    if fmt == COMMAND_R7B:
        return "<|START_THINKING|>", "<|END_THINKING|>"
    return "<think>", "</think>"
