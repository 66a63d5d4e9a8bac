"""JSON in and out: request bodies into llama.v1 messages, messages and values out the way
llama-server writes them (compact, UTF-8, numbers as numbers)."""

from __future__ import annotations

import json
import math
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from rest_bridge.errors import BridgeError
from rest_bridge.protoparse import parse_into

Json = Any  # a decoded JSON value
M = TypeVar("M", bound=Message)


def dumps(obj: Json) -> bytes:
    """Compact JSON as llama-server sends it; NaN and infinities become null (JSON has none)."""
    try:
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(obj), ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8")


def _finite(obj: Json) -> Json:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def parse_json(raw: bytes) -> Json:
    """The request body as JSON; a body that does not parse is a 400."""
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise BridgeError.invalid_request(f"the request body is not valid JSON: {e}") from e


def parse_object(raw: bytes) -> dict[str, Json]:
    """The request body as a JSON object (an empty body counts as `{}`)."""
    if not raw.strip():
        return {}
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise BridgeError.invalid_request("the request body must be a JSON object")
    return body


def to_message(body: dict[str, Json], message: M) -> M:
    """Fill `message` from a JSON object. Unknown fields are ignored, as llama-server ignores
    them; a known field of the wrong type is a 400."""
    try:
        ids = _token_prompt(body, message)
        if ids is None or not _fill_with_typed_prompt(body, ids, message):
            parse_into(body, message)
    except (json_format.ParseError, ValueError, TypeError) as e:
        raise BridgeError.invalid_request(str(e)) from e
    return message


def _token_prompt(body: dict[str, Json], message: Message) -> list[int] | None:
    """The body's `prompt` if it is token ids only and `message` has a `typed_prompt`. As a
    google.protobuf.Value it would be a message per token to build, send and read back: ~5 ms
    for a 1,000-token prompt; as `typed_prompt` token ids it is one run of int32s. The service
    reads both forms of the prompt the same way."""
    prompt = body.get("prompt")
    if type(prompt) is not list or not prompt \
            or "typed_prompt" not in message.DESCRIPTOR.fields_by_name \
            or set(map(type, prompt)) != {int}:  # ints only (bool is a type of its own)
        return None
    return prompt


def _fill_with_typed_prompt(body: dict[str, Json], ids: list[int], message: Message) -> bool:
    """Fill `message` from the body but its `prompt`, then the prompt as `typed_prompt`; False
    (and `message` cleared) where the body must be read as it came: it names another prompt
    form too (ParseDict's oneof error), or an id is outside int32 (the service's error)."""
    parse_into({k: v for k, v in body.items() if k != "prompt"}, message)
    if message.WhichOneof("prompt_input") is None:
        try:
            message.typed_prompt.prompts.add().pieces.add().tokens.ids.extend(ids)
            return True
        except ValueError:
            pass
    message.Clear()
    return False


def message_json(message: Message) -> dict[str, Json]:
    """A response message as JSON with llama-server's field names. Plain fields are always
    written; optional and message fields only when set (the proto marks which is which)."""
    result: dict[str, Json] = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
    return result


def integral(obj: dict[str, Json], *keys: str) -> dict[str, Json]:
    """Write whole-number doubles (byte counts, parameter counts) as JSON integers."""
    for key in keys:
        value = obj.get(key)
        if isinstance(value, float) and value.is_integer():
            obj[key] = int(value)
    return obj


_DOTTED = {"speculative_n_max": "speculative.n_max", "speculative_n_min": "speculative.n_min",
           "speculative_p_min": "speculative.p_min"}


def settings_json(settings: Message) -> dict[str, Json]:
    """GenerationSettings as llama-server writes them (`speculative.n_max`, ...)."""
    return {_DOTTED.get(k, k): v for k, v in message_json(settings).items()}
