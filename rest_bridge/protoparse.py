"""A request body into a llama.v1 message, the way `json_format.ParseDict(...,
ignore_unknown_fields=True)` does it, only cheaper for the fields nearly every request has,
and with one difference that llama-server has: a top-level integer field given a number with
a fraction takes it truncated toward zero (1.5 -> 1), where ParseDict refuses it.

ParseDict is pure Python and costs ~50 us for a plain /completion body, on the path to the
first token. Top-level fields whose value needs no conversion (an int for an integer field, a
number for a float, a bool, a string, a string/number/bool for a google.protobuf.Value) are
set directly here, and so are lists of strings for a repeated string field or a Value (the
`input` of an embedding request, a rerank request's `documents`: ParseDict spends ~5 us a
string on them, ~0.5 ms for 64 documents; `extend` ~0.03 ms). Every other key goes to
ParseDict in one call, with its order kept: real oneof members, enums, bytes, nested messages,
other repeated fields, nulls, strings with unpaired surrogates, unknown names, and any value
of another type (ParseDict's conversions and errors then apply unchanged). Keys are
independent in ParseDict, except two keys naming one field (`top_k` and `topK`) or two
members of one oneof (`prompt`, `typed_prompt`): such a body goes to ParseDict whole.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)

# Sets message.<name> (or its Value's member) to a value, or returns False to leave it to
# ParseDict.
Setter = Callable[[Message, Any], bool]

_UNPAIRED_SURROGATE = re.compile(
    "[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]")
_FLOAT32_MAX = 3.4028234663852886e38
_INT_TYPES = frozenset((FieldDescriptor.CPPTYPE_INT32, FieldDescriptor.CPPTYPE_INT64,
                        FieldDescriptor.CPPTYPE_UINT32, FieldDescriptor.CPPTYPE_UINT64))


def _exact_setter(name: str, kind: type) -> Setter:
    """Sets values of exactly `kind` (a bool is an int to Python, not to ParseDict)."""
    def put(message: Message, value: Any) -> bool:
        if type(value) is not kind:
            return False
        setattr(message, name, value)
        return True
    return put


def _int_setter(name: str) -> Setter:
    """Sets ints, and numbers with a fraction truncated toward zero: llama-server reads an
    integer field given 1.5 as 1 (nlohmann json's get<int>), where ParseDict refuses it."""
    def put(message: Message, value: Any) -> bool:
        kind = type(value)
        if kind is float:
            if not math.isfinite(value):
                return False
            value = int(value)
        elif kind is not int:
            return False
        setattr(message, name, value)  # out of the field's range: ValueError, ParseDict's
        return True
    return put


def _float_setter(name: str, limit: float) -> Setter:
    def put(message: Message, value: Any) -> bool:
        # ParseDict refuses non-finite floats and floats beyond a float field's range.
        if type(value) is float:
            if not (math.isfinite(value) and -limit <= value <= limit):
                return False
        elif type(value) is not int:
            return False
        setattr(message, name, float(value))
        return True
    return put


def _string_setter(name: str) -> Setter:
    def put(message: Message, value: Any) -> bool:
        if type(value) is not str or (not value.isascii()
                                      and _UNPAIRED_SURROGATE.search(value)):
            return False
        setattr(message, name, value)
        return True
    return put


def _strings(value: Any) -> bool:
    """Whether `value` is a non-empty list of strings that protobuf takes as they are (an
    empty list, another element or a lone surrogate: ParseDict's outcome, whatever it is)."""
    if type(value) is not list or not value:
        return False
    for v in value:
        if type(v) is not str or (not v.isascii() and _UNPAIRED_SURROGATE.search(v)):
            return False
    return True


def _value_setter(name: str) -> Setter:
    def put(message: Message, value: Any) -> bool:
        kind = type(value)
        if kind is str:
            getattr(message, name).string_value = value
        elif kind is bool:
            getattr(message, name).bool_value = value
        elif kind is int or kind is float:
            getattr(message, name).number_value = value
        elif _strings(value):
            getattr(message, name).list_value.extend(value)
        else:
            return False
        return True
    return put


def _strings_setter(name: str) -> Setter:
    """A repeated string field given a list of strings."""
    def put(message: Message, value: Any) -> bool:
        if not _strings(value):
            return False
        getattr(message, name).extend(value)
        return True
    return put


def _setter(field: FieldDescriptor) -> Setter | None:
    if field.is_repeated:
        return _strings_setter(field.name) if field.type == FieldDescriptor.TYPE_STRING else None
    cpp = field.cpp_type
    if cpp in _INT_TYPES:
        return _int_setter(field.name)
    if cpp == FieldDescriptor.CPPTYPE_DOUBLE:
        return _float_setter(field.name, math.inf)
    if cpp == FieldDescriptor.CPPTYPE_FLOAT:
        return _float_setter(field.name, _FLOAT32_MAX)
    if cpp == FieldDescriptor.CPPTYPE_BOOL:
        return _exact_setter(field.name, bool)
    if cpp == FieldDescriptor.CPPTYPE_STRING and field.type == FieldDescriptor.TYPE_STRING:
        return _string_setter(field.name)
    if cpp == FieldDescriptor.CPPTYPE_MESSAGE and \
            field.message_type.full_name == "google.protobuf.Value":
        return _value_setter(field.name)
    return None


def _real_oneof(field: FieldDescriptor) -> str | None:
    # A proto3 `optional` is a one-field oneof of its own: nothing can clash with it.
    oneof = field.containing_oneof
    return oneof.name if oneof is not None and len(oneof.fields) > 1 else None


class _Plan:
    """For one message type: JSON key -> (field number, real oneof or None, setter or None)."""

    def __init__(self, descriptor: Descriptor) -> None:
        self.keys: dict[str, tuple[int, str | None, Setter | None]] = {}
        self.ints: set[str] = set()  # keys of singular integer fields
        for field in descriptor.fields:
            entry = (field.number, _real_oneof(field), _setter(field))
            self.keys[field.name] = entry
            self.keys[field.json_name] = entry
            if field.cpp_type in _INT_TYPES and not field.is_repeated:
                self.ints.update((field.name, field.json_name))


_plans: dict[str, _Plan] = {}


def _plan(descriptor: Descriptor) -> _Plan:
    plan = _plans.get(descriptor.full_name)
    if plan is None:
        plan = _plans[descriptor.full_name] = _Plan(descriptor)
    return plan


def parse_into(body: dict[str, Any], message: M) -> M:
    """Fill the fresh `message` from `body` as ParseDict(body, message,
    ignore_unknown_fields=True) would; raises what ParseDict raises."""
    plan = _plan(message.DESCRIPTOR)
    keys = plan.keys
    rest: dict[str, Any] = {}
    seen: set[int | str] = set()
    for key, value in body.items():
        entry = keys.get(key)
        if entry is None:
            rest[key] = value  # unknown: ParseDict ignores it (or refuses `[ext]` names)
            continue
        number, oneof, put = entry
        # The same field twice (`top_k` and `topK`), or two members of a oneof: the outcome
        # depends on the order of all keys, so ParseDict gets the whole body.
        clash = number in seen or (oneof is not None and value is not None and oneof in seen)
        if clash:
            message.Clear()
            json_format.ParseDict(truncated(body, plan.ints), message,
                                  ignore_unknown_fields=True)
            return message
        seen.add(number)
        if oneof is not None and value is not None:
            seen.add(oneof)
        try:
            done = put is not None and put(message, value)
        except (ValueError, TypeError, OverflowError):  # out of range: ParseDict's error
            done = False
        if not done:
            rest[key] = value
    if rest:
        json_format.ParseDict(rest, message, ignore_unknown_fields=True)
    return message


def truncated(body: dict[str, Any], int_keys: set[str]) -> dict[str, Any]:
    """`body` with each finite number with a fraction under one of `int_keys` truncated
    toward zero (what _int_setter does, for the bodies ParseDict reads whole)."""
    return {k: int(v) if k in int_keys and type(v) is float and math.isfinite(v) else v
            for k, v in body.items()}
