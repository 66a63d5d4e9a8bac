"""A chat answer held to a JSON schema (a chat request's response_format or json_schema), framed
the way llama-server frames it for a Jinja chat template.

llama-server (common/chat-auto-parser-generator.cpp) does not use the schema's grammar alone for
a chat answer: it lets the model write some whitespace, then either a Markdown fence
("```json", whitespace, the value, whitespace, "```") or the bare value followed by whitespace,
and its chat parser returns only the value as the message's content. With greedy sampling a
model's first pick can be the fence, so the grammar must offer the same choices for our answers
to be the same tokens; `JsonAnswerText` then takes the frame off the text as it streams.

    chat_answer_grammar(schema_to_grammar(schema))   # the grammar for the answer
    answer = JsonAnswerText(); answer.feed(piece) ... answer.finish()   # the content
"""

from __future__ import annotations

from typing import Any

from service import gbnf
from service.json_schema_primitives import PRIMITIVES

ANSWER_RULE = "response-format"
FENCE = "```json"
_SPACE = frozenset(" \t\n")  # what the grammar's `space` rule writes


def chat_answer_grammar(schema_grammar: str) -> str:
    """`schema_grammar` (root rule `root`) inside llama-server's frame for a chat answer: two
    `space`s, then the fenced value or the value and a `space`."""
    names = gbnf.rule_names(schema_grammar)
    inner, n = ANSWER_RULE, 0
    while inner in names:
        n += 1
        inner = f"{ANSWER_RULE}{n}"
    body = gbnf.rename_rule(schema_grammar, "root", inner)
    root = (f'root ::= space space ( "```json" space {inner} space "```" | '
            f"space {inner} space )\n")
    space = "" if "space" in names else f"space ::= {PRIMITIVES['space'].body}\n"
    return root + body + ("" if body.endswith("\n") else "\n") + space


def schema_requested(req: Any) -> bool:
    """Whether a chat request asks for an answer held to a JSON schema (json_schema_json,
    json_schema, or a response_format of type json_object or json_schema)."""
    if any(req.HasField(f) for f in ("json_schema_json", "json_schema")):
        return True
    return req.HasField("response_format") and \
        req.response_format.type in ("json_object", "json_schema")


class JsonAnswerText:
    """The content of a framed JSON answer, fed the generated text in pieces split anywhere:
    the whitespace and fence before the value are dropped, and whitespace (or a closing fence)
    after it is held back until more of the value follows, and dropped at the end, unless the
    answer stops inside an object or array (llama-server's content then keeps it). Inside a
    JSON string everything passes at once: a string can hold blanks and backticks."""

    def __init__(self) -> None:
        self.leading = True  # before the value: whitespace, maybe the fence
        self.fence = ""  # the part of "```json" read so far
        self.held = ""  # whitespace or backticks after the value's last character
        self.in_string = False
        self.escaped = False
        self.depth = 0  # objects and arrays open

    def feed(self, text: str) -> str:
        out: list[str] = []
        for c in text:
            if self.leading:
                self._lead(c, out)
            else:
                self._value(c, out)
        return "".join(out)

    def finish(self) -> str:
        """What is left at the end: the held whitespace of a value cut off inside an object or
        array; otherwise nothing (held text is the frame's)."""
        rest = self.held if self.depth > 0 else ""
        self.held = self.fence = ""
        return rest

    def _lead(self, c: str, out: list[str]) -> None:
        if self.fence:
            self.fence += c
            if FENCE.startswith(self.fence):
                if self.fence == FENCE:
                    self.fence = ""  # whitespace may follow, then the value
                return
            text, self.fence, self.leading = self.fence, "", False  # not the frame after all
            for ch in text:
                self._value(ch, out)
            return
        if c in _SPACE:
            return
        if c == "`":
            self.fence = c
            return
        self.leading = False
        self._value(c, out)

    def _value(self, c: str, out: list[str]) -> None:
        if self.in_string:
            out.append(c)
            if self.escaped:
                self.escaped = False
            elif c == "\\":
                self.escaped = True
            elif c == '"':
                self.in_string = False
            return
        if c in _SPACE or c == "`":
            self.held += c
            return
        if self.held:
            out.append(self.held)
            self.held = ""
        out.append(c)
        self.in_string = c == '"'
        self.depth += (c in "{[") - (c in "}]")
