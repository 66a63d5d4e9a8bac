"""Reading llama-server's polymorphic values out of a request: a google.protobuf.Value as plain
JSON, and the prompt in its JSON shapes, with a fast path for prompts that are token ids."""

from __future__ import annotations

import math
import struct
from typing import Any

from service.engine.params import ParamError
from service.prompts import Json


def value_to_json(msg: Any, field: str) -> Json:
    """A google.protobuf.Value field as a plain JSON value (None when unset)."""
    if not msg.HasField(field):
        return None
    return _value_json(getattr(msg, field))


def _value_json(value: Any) -> Json:
    """What json_format.MessageToDict makes of a Value, errors included, ~8x faster: the
    generic printer took 2.6 ms for a prompt of 1,024 token ids, on the way to the first
    token."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        if math.isinf(number) or math.isnan(number):
            raise ValueError(f"Fail to serialize {number} for Value.number_value, "
                             "which would parse as string_value")
        return number
    if kind == "string_value" or kind == "bool_value":
        return getattr(value, kind)
    if kind == "list_value":
        items = value.list_value.values
        if len(items) >= _WIRE_MIN:
            numbers = _plain_numbers(value.list_value, len(items))
            if numbers is not None:
                return list(numbers)
        return [_value_json(v) for v in items]
    if kind == "struct_value":
        return {k: _value_json(v) for k, v in value.struct_value.fields.items()}
    return None  # unset or null_value


# A long list of plain numbers (a prompt of token ids sent as a Value) is read from its wire
# form: 0.06 ms instead of 0.57 for 1,024 ids here. Every element of a ListValue is then encoded
# alike: tag of `values` (field 1, length-delimited), length 9, tag of `number_value` (field 2,
# 64-bit), the double.
_WIRE_MIN = 64
_WIRE_ITEM = 11
_WIRE_TAGS = (b"\x0a", b"\x09", b"\x11")


def _plain_numbers(list_value: Any, n: int) -> tuple[float, ...] | None:
    """The n numbers of `list_value` if every element is a finite number_value, else None
    (the element by element reading then decides, errors included)."""
    wire = list_value.SerializeToString()
    if len(wire) != n * _WIRE_ITEM or any(wire[i::_WIRE_ITEM] != tag * n
                                          for i, tag in enumerate(_WIRE_TAGS)):
        return None
    numbers: tuple[float, ...] = struct.unpack("<" + "3xd" * n, wire)  # skip the tags
    # A sum is finite only if every term is (a huge but finite list takes the element by
    # element reading, which accepts it).
    return numbers if math.isfinite(sum(numbers)) else None


def token_prompts(req: Any, n_vocab: int) -> list[list[int]] | None:
    """The request's prompts when they are nothing but token ids inside the vocabulary (how
    long prompts usually come), read and checked in bulk; None for any other shape or any
    doubt, and the general path (prompt_json, prompts.tokenize_prompt) reads the prompt and
    gives its usual errors. For 1,024 ids here: 0.46 ms through the general path, 0.07 this
    way (typed token ids: 0.36 and 0.08)."""
    if req.HasField("typed_prompt"):
        prompts = []
        for tp in req.typed_prompt.prompts:
            if not tp.pieces or any(piece.HasField("text") for piece in tp.pieces):
                return None
            ids = [t for piece in tp.pieces for t in piece.tokens.ids]
            if not ids or min(ids) < 0 or max(ids) >= n_vocab:
                return None
            prompts.append(ids)
        return prompts or None
    if not req.HasField("prompt") or req.prompt.WhichOneof("kind") != "list_value":
        return None
    n = len(req.prompt.list_value.values)
    numbers = _plain_numbers(req.prompt.list_value, n) if n >= _WIRE_MIN else None
    if (numbers is None or min(numbers) < 0 or max(numbers) >= n_vocab
            or not all(map(float.is_integer, numbers))):
        return None
    return [list(map(float.__trunc__, numbers))]  # int(), at half the cost


def prompt_json(req: Any) -> Json:
    """The request's prompt in llama-server's JSON shapes, from `prompt` or `typed_prompt`."""
    if req.HasField("typed_prompt"):
        prompts: list[Json] = []
        for tp in req.typed_prompt.prompts:
            parts: list[Json] = []
            for piece in tp.pieces:
                if piece.HasField("text"):
                    parts.append(piece.text)
                else:
                    parts.extend(piece.tokens.ids)
            prompts.append(parts)
        return prompts if len(prompts) != 1 else prompts[0]
    prompt = value_to_json(req, "prompt")
    if prompt is None:  # absent, JSON null, or a Value with no kind (llama-server: a 400)
        raise ParamError('"prompt" must be provided')
    return prompt
