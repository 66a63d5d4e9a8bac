"""JSON in and out: request bodies into llama.v1 messages, messages and values out the way
llama-server writes them (compact, UTF-8, numbers as numbers)."""

from __future__ import annotations

import itertools
import json
import math
from json.encoder import encode_basestring
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

from rest_bridge.errors import BridgeError
from rest_bridge.media_json import map_media
from rest_bridge.protoparse import parse_into

Json = Any  # a decoded JSON value
M = TypeVar("M", bound=Message)

# The deepest nesting of arrays and objects a request body may have; a deeper one is a 400.
# Python's json.loads recurses once per level and fails at ~1,000 (the recursion limit less
# the server's own stack) with a RecursionError, which was a 500; the protobuf conversion then
# refuses Struct and Value fields nested beyond 100 messages (~50 JSON levels) by itself. 512
# is far beyond any real request, and leaves json.loads its stack. llama-server's nlohmann
# json 3.12 (vendored in llama.cpp) parses iteratively and has no depth limit of its own.
MAX_JSON_DEPTH = 512

_NESTING = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}
_NOT_BRACKETS_OR_QUOTES = bytes(b for b in range(256) if b not in _NESTING and b != ord('"'))


# Made once: json.dumps with any argument builds a new encoder on every call (~1 us, as much
# as encoding a small streamed chunk).
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_NULLING_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps(obj: Json) -> bytes:
    """Compact JSON as llama-server sends it; NaN and infinities become null (JSON has none).
    Bytes are JSON text already (the embedding bodies: rest_bridge/render_embedding.py) and
    pass as they are."""
    if isinstance(obj, bytes):
        return obj
    try:
        text = _ENCODER.encode(obj)
    except ValueError:
        text = _NULLING_ENCODER.encode(_finite(obj))
    return text.encode("utf-8")


def dumps_str(text: str) -> bytes:
    """A JSON string, as dumps writes it, for a str alone (no encoder call at all)."""
    return encode_basestring(text).encode("utf-8")


def _finite(obj: Json) -> Json:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def parse_json(raw: bytes) -> Json:
    """The request body as JSON; a body that does not parse, or nests deeper than
    MAX_JSON_DEPTH, is a 400."""
    check_depth(raw)
    try:
        return json.loads(raw, parse_constant=_not_json)
    except (ValueError, UnicodeDecodeError) as e:
        raise BridgeError.invalid_request(f"the request body is not valid JSON: {e}") from e
    except RecursionError as e:  # check_depth stops such bodies first; in case it does not
        raise _too_deep() from e


def _not_json(name: str) -> Json:
    """NaN, Infinity and -Infinity: Python reads them, JSON (and llama-server) does not."""
    raise ValueError(f"{name} is not a JSON value")


def check_depth(raw: bytes) -> None:
    """A 400 if the body nests arrays and objects deeper than MAX_JSON_DEPTH.

    Cheap where it can be: nesting N levels deep takes N opening brackets, so a body with at
    most MAX_JSON_DEPTH of them (nearly every request) passes on two `bytes.count`s, and one
    shorter than that many bracket pairs on its length alone. Only other bodies are measured,
    by json_depth."""
    # Measured with `python -m timeit -r 20..40` on the 2-core development machine (shared, load
    # ~4.5, so best-of figures), this check against the json.loads that follows it:
    #   1.9 KB /completion body (5 brackets)            1.8 us   json.loads   6.0 us
    #   2.7 KB chat, 20 messages (22 brackets)          2.7 us   json.loads  11 us
    #   110 KB chat, 360 messages (363 brackets)         90 us   json.loads 234 us
    #   114 KB prompt of 16,000 token ids (2 brackets)   87 us   json.loads 1.27 ms
    #   114 KB chat, 1,000 messages (json_depth runs)   0.41 ms  json.loads 0.40 ms
    #   10 KB of 5,000 nested arrays (refused)          0.64 ms
    if len(raw) > 2 * MAX_JSON_DEPTH + 1 \
            and raw.count(b"[") + raw.count(b"{") > MAX_JSON_DEPTH \
            and json_depth(raw) > MAX_JSON_DEPTH:
        raise _too_deep()


def json_depth(raw: bytes) -> int:
    """How deeply the JSON text `raw` nests arrays and objects (0 for a scalar), without
    recursion. Brackets in strings do not count; text that is not JSON gets some number
    (json.loads then says what is wrong with it)."""
    try:
        encoding = json.detect_encoding(raw)
        if not encoding.startswith("utf-8"):  # UTF-16 or UTF-32, which json.loads reads too
            raw = raw.decode(encoding, "surrogatepass").encode("utf-8", "surrogatepass")
    except UnicodeError:
        return 0  # json.loads refuses it as well
    # In JSON text a backslash only starts an escape in a string: without the escaped
    # backslashes and then the escaped quotes, every quote left opens or closes a string, and
    # of the pieces between quotes every other one is outside strings. (No byte of a
    # multi-byte UTF-8 character is ASCII, so the bytes can be searched as they are.)
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = b"".join(raw.translate(None, _NOT_BRACKETS_OR_QUOTES).split(b'"')[::2])
    return max(itertools.accumulate(map(_NESTING.__getitem__, brackets)), default=0)


def _too_deep() -> BridgeError:
    return BridgeError.invalid_request(
        f"the request body nests JSON arrays and objects deeper than {MAX_JSON_DEPTH} levels")


NOT_AN_OBJECT = "the request body must be a JSON object"


def parse_object(raw: bytes) -> dict[str, Json]:
    """The request body as a JSON object (an empty body counts as `{}`)."""
    if not raw.strip():
        return {}
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise BridgeError.invalid_request(NOT_AN_OBJECT)
    return body


# llama.cpp's one-letter sampler codes (common_sampler_type_to_chr): llama-server reads a
# `samplers` string as these; an unknown letter is left out, as it leaves it out.
SAMPLER_LETTERS = {"e": "penalties", "d": "dry", "s": "top_n_sigma", "k": "top_k", "y": "typ_p",
                   "p": "top_p", "m": "min_p", "x": "xtc", "t": "temperature", "i": "infill",
                   "a": "adaptive_p"}


def _as_text(obj: Json, key: str) -> Json:
    """`obj` with its object `key` moved to `key`_json as JSON text (a copy; `obj` as it is
    when there is nothing to move)."""
    if not isinstance(obj, dict) or not isinstance(obj.get(key), dict) \
            or f"{key}_json" in obj:
        return obj
    out = {k: v for k, v in obj.items() if k != key}
    out[f"{key}_json"] = json.dumps(obj[key], ensure_ascii=False)
    return out


def schemas_as_text(body: dict[str, Json]) -> dict[str, Json]:
    """The body with its JSON schemas (json_schema, response_format's, tools' parameters) as
    the messages' JSON-text fields: a protobuf Struct sorts an object's keys, and their order
    is the order a schema's grammar writes properties in and the order a template shows a
    tool's parameters in (llama-server keeps the request's)."""
    body = _as_text(body, "json_schema")
    fmt = body.get("response_format")
    if isinstance(fmt, dict):
        fmt = _as_text(fmt, "schema")
        if isinstance(fmt.get("json_schema"), dict):
            fmt = {**fmt, "json_schema": _as_text(fmt["json_schema"], "schema")}
        body = {**body, "response_format": fmt}
    tools = body.get("tools")
    if isinstance(tools, list):
        body = {**body, "tools": [
            {**t, "function": _as_text(t["function"], "parameters")}
            if isinstance(t, dict) and isinstance(t.get("function"), dict) else t
            for t in tools]}
    return body


def to_message(body: dict[str, Json], message: M) -> M:
    """Fill `message` from a JSON object. Unknown fields are ignored, as llama-server ignores
    them; a known field of the wrong type is a 400."""
    if body.get("dry_sequence_breakers") == []:  # the message cannot tell [] from absent
        raise BridgeError.invalid_request("Field 'dry_sequence_breakers': Error: "
                                          "dry_sequence_breakers must be a non-empty array "
                                          "of strings")
    if body.get("lora") is not None and not isinstance(body["lora"], list) \
            and "lora" in message.DESCRIPTOR.fields_by_name:  # llama-server's words
        raise BridgeError.invalid_request("Field 'lora': Error: 'lora' must be an array of "
                                          "objects with 'id' and 'scale' fields")
    if isinstance(body.get("samplers"), str):
        body = {**body, "samplers": [SAMPLER_LETTERS[c] for c in body["samplers"]
                                     if c in SAMPLER_LETTERS]}
    if body.get("samplers") == [] and "no_samplers" in message.DESCRIPTOR.fields_by_name:
        # the message cannot tell [] from absent; llama-server's [] is a chain of no sampler
        body = {**body, "no_samplers": True}
    if "json_schema_json" in message.DESCRIPTOR.fields_by_name:
        body = schemas_as_text(body)
    if "image_data" in body or "messages" in body:
        body = map_media(body, message)
    if isinstance(body.get("content"), list) \
            and "content_pieces" in message.DESCRIPTOR.fields_by_name:
        body = content_as_pieces(body)
    try:
        ids = _token_prompt(body, message)
        if ids is None or not _fill_with_typed_prompt(body, ids, message):
            parse_into(body, message)
    except (json_format.ParseError, ValueError, TypeError) as e:
        raise BridgeError.invalid_request(str(e)) from e
    return message


def content_as_pieces(body: dict[str, Json]) -> dict[str, Json]:
    """/tokenize's list `content` as TokenizeRequest.content_pieces: strings as text, numbers
    as token ids (a fraction truncated, as llama-server reads an id), consecutive ids in one
    piece. Anything else is a 400 (llama-server's JSON library throws: a 500)."""
    pieces: list[dict[str, Json]] = []
    for i, item in enumerate(body["content"]):
        if isinstance(item, str):
            pieces.append({"text": item})
            continue
        if isinstance(item, bool) or not isinstance(item, int | float) \
                or not -2**31 <= item < 2**31:
            raise BridgeError.invalid_request(
                f"content[{i}]: expected a string or a token id, got {json.dumps(item)[:40]}")
        if pieces and "tokens" in pieces[-1]:
            pieces[-1]["tokens"]["ids"].append(int(item))
        else:
            pieces.append({"tokens": {"ids": [int(item)]}})
    out = {k: v for k, v in body.items() if k != "content"}
    out["content_pieces"] = pieces
    if not pieces:  # no piece, no special token (an empty `content` would have BOS)
        out["add_special"] = False
    return out


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


_DOTTED = {"speculative_types": "speculative.types"}
# Draft settings the pinned llama-server no longer writes (it reads none of them either).
_UNWRITTEN = frozenset({"speculative_n_max", "speculative_n_min", "speculative_p_min"})


def settings_json(settings: Message) -> dict[str, Json]:
    """GenerationSettings as llama-server writes them (`speculative.types`, ...)."""
    out = {_DOTTED.get(k, k): v for k, v in message_json(settings).items()
           if k not in _UNWRITTEN}
    for entry in out.get("logit_bias", ()):
        if isinstance(entry.get("bias"), str):  # a ban's -inf ("-Infinity"): null in JSON
            entry["bias"] = None
    return out
