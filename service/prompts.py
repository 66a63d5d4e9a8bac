"""llama-server's polymorphic request inputs, as plain JSON values, turned into token lists.

A prompt may be a string, a list of token ids, a mix of both ([12, 34, "text", 56]), an object
{"prompt_string": ...}, or a list of such prompts (several completions). logit_bias may be
[[token|string, bias|false], ...] or an OpenAI-style {"token id": bias} map. Works on JSON
values so the gRPC and REST paths share it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from native import Vocab
from service.engine.params import ParamError
from service.limits import check_prompt_text

Json = Any


def _is_token(x: Json) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _token_id(x: Json, vocab: Vocab) -> int:
    if isinstance(x, float) and not x.is_integer():
        raise ParamError(f"token ids must be integers, got {x}")
    tok = int(x)
    if not 0 <= tok < vocab.n_tokens:
        raise ParamError(f"token id {tok} is outside the vocabulary (0..{vocab.n_tokens - 1})")
    return tok


def _token_ids(ids: list[int], vocab: Vocab) -> list[int]:
    lo, hi = min(ids), max(ids)
    if lo < 0 or hi >= vocab.n_tokens:
        _token_id(lo if lo < 0 else hi, vocab)  # raises the usual error
    return ids


_SHAPES = ('"prompt" elements must be a string, a list of tokens, a JSON object containing a '
           'prompt string, or a list of mixed strings & tokens')


def split_prompts(prompt: Json) -> list[Json]:
    """The individual prompts of a request: one unless it is a list of strings/lists/objects.
    An object is llama-server's {"prompt_string": ...} form (multimodal_data is refused)."""
    if isinstance(prompt, str) or prompt is None:
        return [prompt or ""]
    if isinstance(prompt, dict):
        return [prompt]
    if not isinstance(prompt, list):
        raise ParamError(_SHAPES, field="prompt")
    if not prompt:
        return [prompt]
    if all(_is_token(p) for p in prompt):
        return [prompt]
    several = any(isinstance(p, list | dict) for p in prompt) \
        or all(isinstance(p, str) for p in prompt)
    if several and (len(prompt) > 1 or isinstance(prompt[0], list)):
        return list(prompt)
    return [prompt]  # a mix of tokens and strings is one prompt


def tokenize_prompt(prompt: Json, vocab: Vocab, add_special: bool = True,
                    parse_special: bool = True) -> list[int]:
    """One prompt as tokens. BOS is added (if the model wants it) when the prompt is a string or
    a list whose first element is a string, as llama-server does."""
    if isinstance(prompt, dict):
        prompt = _prompt_string(prompt)
    if isinstance(prompt, str):
        check_prompt_text(prompt)
        return vocab.tokenize(prompt, add_special=add_special, parse_special=parse_special)
    if not isinstance(prompt, list):
        raise ParamError("each prompt must be a string or a list of tokens and strings")
    if prompt and all(type(p) is int or (type(p) is float and p.is_integer()) for p in prompt):
        return _token_ids([int(p) for p in prompt], vocab)  # the common case: checked at once
    check_prompt_text("".join(p for p in prompt if isinstance(p, str)))
    out: list[int] = []
    for i, part in enumerate(prompt):
        if isinstance(part, str):
            out += vocab.tokenize(part, add_special=add_special and i == 0,
                                  parse_special=parse_special)
        elif _is_token(part):
            out.append(_token_id(part, vocab))
        else:
            raise ParamError(f"prompt elements must be token ids or strings, got {part!r}")
    return out


def _prompt_string(obj: dict[str, Json]) -> Json:
    """The prompt of llama-server's object form: its `prompt_string` (text, or tokens and
    text mixed). Its `multimodal_data` needs a multimodal model, which this server has not."""
    if "prompt_string" not in obj:
        raise ParamError(_SHAPES, field="prompt")
    if "multimodal_data" in obj:
        raise ParamError("Multimodal data provided, but model does not support multimodal "
                         "requests.", field="prompt")
    inner = obj["prompt_string"]
    if not isinstance(inner, str | list) or (isinstance(inner, list) and not all(
            isinstance(p, str) or _is_token(p) for p in inner)):
        raise ParamError(_SHAPES, field="prompt")
    return inner


def parse_logit_bias(value: Json, vocab: Vocab) -> tuple[tuple[int, float], ...]:
    """llama-server's logit_bias forms as (token, bias) pairs; `false` bans (-inf)."""
    if value is None:
        return ()
    items: list[tuple[Json, Json]]
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list):
        items = []
        for pair in value:
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                raise ParamError("logit_bias entries must be [token or string, bias] pairs",
                                 field="logit_bias")
            items.append((pair[0], pair[1]))
    else:
        raise ParamError("logit_bias must be a list of pairs or an object", field="logit_bias")
    out: dict[int, float] = {}
    for key, bias in items:
        b = _bias_value(bias)
        for tok in _bias_tokens(key, vocab):
            out[tok] = b
    return tuple(out.items())


def _bias_value(bias: Json) -> float:
    if bias is False:
        return float("-inf")
    if isinstance(bias, bool) or not isinstance(bias, int | float):
        raise ParamError("a logit_bias value must be a number or false", field="logit_bias")
    if math.isnan(bias):
        raise ParamError("a logit_bias value must not be NaN", field="logit_bias")
    return float(bias)


def _bias_tokens(key: Json, vocab: Vocab) -> Sequence[int]:
    if _is_token(key):
        return [_token_id(key, vocab)]
    if isinstance(key, str):
        try:  # OpenAI's map form has token ids as strings
            tok = int(key)
        except ValueError:
            return vocab.tokenize(key, add_special=False, parse_special=False)
        # A numeric key is always an id: an unknown one is an error, not text to tokenize.
        return [_token_id(tok, vocab)]
    raise ParamError("logit_bias keys must be token ids or strings", field="logit_bias")


def parse_stop(value: Json) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        if all(isinstance(s, str) for s in value):
            return tuple(value)
        raise ParamError("stop must be a string or a list of strings", field="stop")
    # llama-server reads only a string or a list and leaves other values (5, {}) out: the
    # server's default stop strings apply, as when the request has none.
    return ()
