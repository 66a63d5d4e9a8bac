"""The fixed GBNF rules JSON grammars are built from: whitespace, any JSON value, numbers,
strings and the string formats, each with the rules it refers to.

Whitespace (`space`) is what llama-server allows between tokens: nothing, one space, or one or
two newlines and some indentation, bounded so that a model cannot spin on blanks forever.
Numbers keep to 16 significant digits either side of the point, like llama-server's.

Each rule accepts exactly the language of llama.cpp's rule of the same name (common/
json-schema-to-grammar.cpp), so that greedy sampling picks the same tokens under ours as under
llama-server's: a string escape is one of \\" \\\\ \\b \\f \\n \\r \\t \\uXXXX (not \\/), a date
checks the month and a day of 01-31 (not the month's length), a time's fraction has 3 digits.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Primitive:
    body: str
    deps: tuple[str, ...] = ()


PRIMITIVES: dict[str, Primitive] = {
    "space": Primitive('| " " | "\\n"{1,2} [ \\t]{0,20}'),
    "value": Primitive("object | array | string | number | boolean | null",
                       ("object", "array", "string", "number", "boolean", "null")),
    "object": Primitive('"{" space ( string ":" space value '
                        '( "," space string ":" space value )* )? space "}"',
                        ("space", "string", "value")),
    "array": Primitive('"[" space ( value ( "," space value )* )? space "]"',
                       ("space", "value")),
    "char": Primitive('[^"\\\\\\x00-\\x1F\\x7F] | escape', ("escape",)),
    "escape": Primitive('"\\\\" ( ["\\\\bfnrt] | "u" [0-9a-fA-F]{4} )'),
    "string": Primitive('"\\"" char* "\\""', ("char",)),
    "integral-part": Primitive("[0] | [1-9] [0-9]{0,15}"),
    "decimal-part": Primitive("[0-9]{1,16}"),
    "integer": Primitive('"-"? integral-part', ("integral-part",)),
    "number": Primitive('"-"? integral-part ( "." decimal-part )? '
                        '( [eE] [-+]? integral-part )?', ("integral-part", "decimal-part")),
    "boolean": Primitive('"true" | "false"'),
    "null": Primitive('"null"'),
    "date": Primitive('[0-9]{4} "-" ( "0" [1-9] | "1" [0-2] ) "-" '
                      '( "0" [1-9] | [12] [0-9] | "3" [01] )'),
    "time": Primitive('( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] ":" [0-5] [0-9] '
                      '( "." [0-9]{3} )? '
                      '( "Z" | [+-] ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )'),
    "date-time": Primitive('date "T" time', ("date", "time")),
    "uuid": Primitive('[0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" '
                      '[0-9a-fA-F]{4} "-" [0-9a-fA-F]{12}'),
    "date-string": Primitive('"\\"" date "\\""', ("date",)),
    "time-string": Primitive('"\\"" time "\\""', ("time",)),
    "date-time-string": Primitive('"\\"" date-time "\\""', ("date-time",)),
    "uuid-string": Primitive('"\\"" uuid "\\""', ("uuid",)),
}

# JSON Schema `format` values with a grammar; other formats constrain nothing (any string).
STRING_FORMATS: dict[str, str] = {
    "date": "date-string", "time": "time-string", "date-time": "date-time-string",
    "uuid": "uuid-string", **{f"uuid{v}": "uuid-string" for v in range(1, 6)},
}
