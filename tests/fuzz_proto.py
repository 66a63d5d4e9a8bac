"""Hypothesis strategies generated from protobuf descriptors, for fuzzing any gRPC method
(tests/test_fuzz_grpc.py): every field of a message may be set or not; scalars take their
type's extreme values as well as ordinary ones; strings odd unicode (combining marks, RTL,
emoji, NUL, private use) and sometimes great length; repeated fields empty, short or long;
one member of a oneof at most; enums any number, known or not; map fields; nested messages
down to a bounded depth (deeper ones are left unset, which also ends recursive types)."""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

MAX_DEPTH = 4
_ODD_TEXT = ["", "\x00", "\u202e\u0301\u200d", "🦙" * 40, "\U0010fffd", "\ufeff{", "\\u0000",
             "a" * 70_000, "\n" * 5_000, "<|im_start|>", "{{ 7 * 7 }}", "../../etc/passwd"]
_INTS = {
    FieldDescriptor.CPPTYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.CPPTYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.CPPTYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.CPPTYPE_UINT64: (0, 2**64 - 1),
}
_FLOAT_EXTREMES = [0.0, -0.0, float("inf"), float("-inf"), float("nan"), 1e-45, 3.4e38,
                   -3.4e38, 1e308, 5e-324]


def text() -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(st.characters(exclude_categories=["Cs"]), max_size=40),
        st.sampled_from(_ODD_TEXT))


def _integers(cpp_type: int) -> st.SearchStrategy[int]:
    low, high = _INTS[cpp_type]
    return st.one_of(st.integers(-3, 100).filter(lambda v: low <= v <= high),
                     st.sampled_from([low, high, low + 1, high - 1, 0, 1, -1 if low else 2]),
                     st.integers(low, high))


def _scalar(f: FieldDescriptor, depth: int) -> st.SearchStrategy[Any] | None:
    """Values of one element of `f`; None for a message past MAX_DEPTH."""
    cpp = f.cpp_type
    if cpp == FieldDescriptor.CPPTYPE_MESSAGE:
        if depth >= MAX_DEPTH:
            return None
        return messages(f.message_type, depth + 1)
    if cpp == FieldDescriptor.CPPTYPE_ENUM:
        known = [v.number for v in f.enum_type.values]
        return st.one_of(st.sampled_from(known), st.integers(-(2**31), 2**31 - 1))
    if cpp == FieldDescriptor.CPPTYPE_BOOL:
        return st.booleans()
    if cpp == FieldDescriptor.CPPTYPE_STRING:
        if f.type == FieldDescriptor.TYPE_BYTES:
            return st.one_of(st.binary(max_size=64), st.just(b"\x00" * 100_000))
        return text()
    if cpp in (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE):
        return st.one_of(st.floats(allow_nan=True, width=32 if cpp ==
                                   FieldDescriptor.CPPTYPE_FLOAT else 64),
                         st.sampled_from(_FLOAT_EXTREMES))
    return _integers(cpp)


def _is_map(f: FieldDescriptor) -> bool:
    return f.message_type is not None and f.message_type.GetOptions().map_entry


def _field(f: FieldDescriptor, depth: int) -> st.SearchStrategy[Any] | None:
    if _is_map(f):
        key = _scalar(f.message_type.fields_by_name["key"], depth)
        value = _scalar(f.message_type.fields_by_name["value"], depth)
        if key is None or value is None:
            return None
        return st.dictionaries(key, value, max_size=4)
    one = _scalar(f, depth)
    if one is None or not f.is_repeated:
        return one
    return st.one_of(st.lists(one, max_size=4),
                     st.lists(one, min_size=200, max_size=400) if depth == 0
                     and f.cpp_type != FieldDescriptor.CPPTYPE_MESSAGE else st.nothing(),
                     st.just([]))


def _set(message: Message, f: FieldDescriptor, value: Any) -> None:
    target: Any = getattr(message, f.name)
    if _is_map(f):
        for k, v in value.items():
            if f.message_type.fields_by_name["value"].message_type is not None:
                target[k].CopyFrom(v)
            else:
                target[k] = v
    elif f.is_repeated:
        if f.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
            for v in value:
                target.add().CopyFrom(v)
        else:
            target.extend(value)
    elif f.cpp_type == FieldDescriptor.CPPTYPE_MESSAGE:
        getattr(message, f.name).CopyFrom(value)
    else:
        setattr(message, f.name, value)


@st.composite
def _build(draw: st.DrawFn, d: Descriptor, depth: int) -> Message:
    message = GetMessageClass(d)()
    chosen: dict[str, FieldDescriptor] = {}
    for oneof in d.oneofs:
        if oneof.fields and not _synthetic(oneof):
            pick = draw(st.none() | st.sampled_from(list(oneof.fields)))
            if pick is not None:
                chosen[pick.name] = pick
    oneof_members = {f.name for o in d.oneofs if not _synthetic(o) for f in o.fields}
    for f in d.fields:
        if f.name in oneof_members and f.name not in chosen:
            continue
        strategy = _field(f, depth)
        if strategy is None or not (f.name in chosen or draw(st.booleans())):
            continue
        _set(message, f, draw(strategy))
    return message


def _synthetic(oneof: Any) -> bool:
    """proto3 `optional` makes a oneof of one member: that is a plain field, not a choice."""
    return bool(getattr(oneof, "is_synthetic", False)) or (
        len(oneof.fields) == 1 and oneof.name == "_" + oneof.fields[0].name)


_CACHE: dict[tuple[str, int], st.SearchStrategy[Message]] = {}


def messages(d: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of type `d`, nested messages at most MAX_DEPTH - depth levels below."""
    key = (d.full_name, depth)
    if key not in _CACHE:
        _CACHE[key] = st.deferred(lambda: _build(d, depth))
    return _CACHE[key]


def not_protobuf() -> st.SearchStrategy[bytes]:
    """Bytes that are not a valid protobuf message of any type (or only by accident): bad
    wire types, truncated varints and lengths, field number 0, groups, random bytes."""
    return st.one_of(
        st.sampled_from([b"\xff", b"\x08", b"\x08" + b"\xff" * 10, b"\x0a\x05ab", b"\x00\x00",
                         b"\x0b\x0c", b"\x0f", b"\x12\xff\xff\xff\xff\x0f",
                         b"\x0a\x80\x80\x80\x80\x10", b"\x07" * 16]),
        st.binary(min_size=1, max_size=256),
        st.binary(min_size=1, max_size=32).map(lambda b: b"\x0a\xff\x01" + b))
