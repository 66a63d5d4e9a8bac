"""From a llama.v1 CompletionRequest to engine parameters: unset fields take the server's
defaults (its command-line sampling flags over llama-server's own), set ones are validated."""

from __future__ import annotations

import math
import struct
from dataclasses import replace
from typing import Any

from google.protobuf import json_format

from native import Vocab
from service.engine.params import CompletionParams, ParamError, SamplingParams
from service.json_schema_grammar import grammar_for_request_schema, json_object_grammar
from service.prompts import Json, parse_logit_bias, parse_stop

# Optional scalar fields copied to SamplingParams under the same name.
_SAMPLING_FIELDS = (
    "temperature", "dynatemp_range", "dynatemp_exponent", "top_k", "top_p", "min_p",
    "top_n_sigma", "typical_p", "xtc_probability", "xtc_threshold", "repeat_penalty",
    "repeat_last_n", "presence_penalty", "frequency_penalty", "dry_multiplier", "dry_base",
    "dry_allowed_length", "dry_penalty_last_n", "mirostat", "mirostat_tau", "mirostat_eta",
    "min_keep", "seed", "grammar",
)
_COMPLETION_FIELDS = ("n_indent", "n_keep", "id_slot", "cache_prompt", "ignore_eos", "n_probs",
                      "t_max_predict_ms")


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


def schema_grammar(req: Any) -> str | None:
    """The grammar for `json_schema`, or for a chat request's `response_format` (llama-server:
    json_object -> any object, or its `schema`; json_schema -> json_schema.schema)."""
    if req.HasField("json_schema"):
        return grammar_for_request_schema(json_format.MessageToDict(req.json_schema))
    fmt = getattr(req, "response_format", None)
    if fmt is None or not req.HasField("response_format") or fmt.type in ("", "text"):
        return None
    if fmt.type == "json_object":
        if fmt.HasField("schema"):
            return grammar_for_request_schema(json_format.MessageToDict(fmt.schema))
        return json_object_grammar()
    if fmt.type == "json_schema":
        return grammar_for_request_schema(json_format.MessageToDict(fmt.json_schema.schema))
    raise ParamError('response_format type must be one of "text", "json_object" or '
                     f'"json_schema", but got: {fmt.type}')


def completion_params(req: Any, defaults: CompletionParams, vocab: Vocab,
                      n_slots: int) -> CompletionParams:
    s: dict[str, Any] = {f: getattr(req, f) for f in _SAMPLING_FIELDS if req.HasField(f)}
    if req.dry_sequence_breakers:
        s["dry_sequence_breakers"] = tuple(req.dry_sequence_breakers)
    if req.samplers:
        s["samplers"] = tuple(req.samplers)
    bias = parse_logit_bias(value_to_json(req, "logit_bias"), vocab)
    if bias:
        s["logit_bias"] = bias
    from_schema = schema_grammar(req)
    if from_schema is not None:
        if req.HasField("grammar"):
            raise ParamError("Cannot use both json_schema and grammar")
        s["grammar"] = from_schema
    sampling: SamplingParams = replace(defaults.sampling, **s)
    c: dict[str, Any] = {f: getattr(req, f) for f in _COMPLETION_FIELDS if req.HasField(f)}
    if req.HasField("n_predict"):
        c["n_predict"] = req.n_predict
    elif req.HasField("max_tokens"):
        c["n_predict"] = req.max_tokens
    stop = parse_stop(value_to_json(req, "stop"))
    if stop:
        c["stop"] = stop
    params = replace(defaults, sampling=sampling, post_sampling_probs=req.post_sampling_probs,
                     return_tokens=req.return_tokens, timings_per_token=req.timings_per_token,
                     **c)
    params.validate(n_slots)
    return params
