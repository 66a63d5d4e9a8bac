"""From a llama.v1 request (completion, OpenAI completion, chat) to engine parameters: unset
fields take the server's defaults (its command-line flags over llama-server's own), every alias
is resolved, set fields are validated.

The sampling fields are declared once, as SamplingParams' fields: a request field of the same
name is read when it is set (proto3 presence), and the rest is derived from that declaration.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

from native import Vocab
from service import limits
from service.engine.params import (
    CompletionParams,
    ParamError,
    SamplingParams,
    canonical_sampler,
)
from service.engine.speculative import spec_params_of
from service.grammar_limits import check_grammar
from service.json_schema_errors import SchemaError
from service.json_schema_grammar import grammar_for_request_schema
from service.lora import HasScale, request_adapters
from service.typed_inputs import logit_bias_of, schema_of, stop_of

_log = logging.getLogger(__name__)

# SamplingParams fields read in their own request shapes, not as optional scalars.
_SAMPLING_SHAPED = frozenset({"logit_bias", "samplers", "dry_sequence_breakers", "grammar"})
# CompletionParams fields a request sets by name when present.
_COMPLETION_FIELDS = ("n_indent", "n_keep", "id_slot", "cache_prompt", "ignore_eos", "n_probs",
                      "t_max_predict_ms", "n_discard", "n_cache_reuse")


@dataclass(frozen=True)
class Defaults:
    """What the server fills in: its flags' sampling defaults, its -n, and its limits."""

    params: CompletionParams  # its n_predict is the server's -n, for requests that set none
    n_slots: int
    loras: Sequence[HasScale] = ()  # loaded LoRA adapters with their global scales


def sampling_field_names() -> tuple[str, ...]:
    """The SamplingParams fields a request sets by their own name (its optional scalars)."""
    return tuple(f.name for f in fields(SamplingParams))


def _scalar_sampling(req: Any) -> dict[str, Any]:
    names = {f.name for f in req.DESCRIPTOR.fields}
    return {name: getattr(req, name) for name in sampling_field_names()
            if name in names and name not in _SAMPLING_SHAPED and req.HasField(name)}


_INT32_MAX = 2**31 - 1
# Request fields llama-server brings into range (its schema's soft limits): top_k -1 is 0.
_CLAMPED: dict[str, tuple[float, float]] = {
    "top_k": (0, _INT32_MAX), "top_p": (0.0, 1.0), "min_p": (0.0, 1.0),
    "xtc_probability": (0.0, 1.0), "xtc_threshold": (0.0, 1.0), "temperature": (0.0, math.inf),
    "mirostat": (0, 2)}
# Request fields it refuses outside a range (its hard limits), under each name they have.
_BOUNDED: dict[str, tuple[int, int]] = {
    "n_predict": (-1, _INT32_MAX), "max_tokens": (-1, _INT32_MAX),
    "max_completion_tokens": (-1, _INT32_MAX), "n_indent": (0, _INT32_MAX),
    "n_keep": (-1, _INT32_MAX), "n_discard": (0, _INT32_MAX),
    "t_max_predict_ms": (-1, 2**63 - 1), "repeat_last_n": (0, _INT32_MAX),
    "dry_allowed_length": (0, _INT32_MAX), "dry_penalty_last_n": (0, _INT32_MAX),
    "min_keep": (0, _INT32_MAX), "n_cache_reuse": (0, _INT32_MAX)}


def check_bounds(req: Any) -> None:
    """llama-server's hard limits: a set field outside its range is refused, in its words."""
    present = {f.name for f in req.DESCRIPTOR.fields}
    for name, (low, high) in _BOUNDED.items():
        if name in present and req.HasField(name):
            value = getattr(req, name)
            if not low <= value <= high:
                raise ParamError(f"Field '{name}': Value must be between {low} <= value <= "
                                 f"{high}, but got {value}", field=name)


def _clamped(s: dict[str, Any], defaults: SamplingParams) -> dict[str, Any]:
    for name, (low, high) in _CLAMPED.items():
        value = s.get(name)
        if value is not None and not math.isnan(value):  # NaN: validate() refuses it
            s[name] = type(value)(max(low, min(high, value)))
    if s.get("dry_base", 1.0) < 1.0:  # llama-server: "replaced with the default value"
        s["dry_base"] = defaults.dry_base
    return s


def sampling_params(req: Any, defaults: SamplingParams, vocab: Vocab) -> SamplingParams:
    s = _clamped(_scalar_sampling(req), defaults)
    if req.dry_sequence_breakers:
        s["dry_sequence_breakers"] = tuple(req.dry_sequence_breakers)
    if req.no_samplers and req.samplers:
        raise ParamError("no_samplers asks for an empty sampler chain; 'samplers' must be empty")
    if req.samplers or req.no_samplers:
        s["samplers"] = known_samplers(req.samplers)
    bias = logit_bias_of(req, vocab)
    if bias:
        s["logit_bias"] = bias
    if req.HasField("grammar"):
        s["grammar"] = req.grammar
    from_schema = schema_grammar(req)
    if from_schema is not None:
        if req.HasField("grammar"):
            raise ParamError("Cannot use both json_schema and grammar")
        s["grammar"] = from_schema
    sampling: SamplingParams = replace(defaults, **s)
    if sampling.grammar:
        check_grammar(sampling.grammar)
    return sampling


def known_samplers(names: Iterable[str]) -> tuple[str, ...]:
    """The canonical names of a request's samplers. A name no sampler has is left out with a
    warning in the log, as llama-server leaves it out (common_sampler_types_from_names): a
    client written for another build's samplers still gets an answer."""
    known = []
    for name in names:
        try:
            known.append(canonical_sampler(name))
        except ParamError:
            _log.warning("unknown sampler %r left out of the request's samplers", name)
    return tuple(known)


def schema_grammar(req: Any) -> str | None:
    """The grammar for `json_schema_json` / `json_schema`, or for a chat request's
    `response_format`, which wins over them as in llama-server (json_object -> its `schema`,
    else the request's json_schema, else any object; json_schema -> json_schema.schema); each
    schema's JSON text form wins over its Struct."""
    body = schema_of(req, "json_schema_json", "json_schema")
    from_format = _response_format_schema(req, body)
    if from_format is not None:
        return grammar_for_request_schema(from_format)
    if body is None:
        return None
    try:
        return grammar_for_request_schema(body)
    except SchemaError as e:  # in llama-server's words, which name the field
        raise ParamError(f'"json_schema": JSON schema conversion failed: {e}',
                         field="json_schema") from e


def _response_format_schema(req: Any, body: Any) -> Any:
    """The schema a chat request's response_format stands for, as llama-server reads it; None
    where it leaves the request's json_schema (or none) in place."""
    fmt = getattr(req, "response_format", None)
    if fmt is None or not req.HasField("response_format") or fmt.type in ("", "text"):
        return None
    if fmt.type == "json_object":
        schema = schema_of(fmt, "schema_json", "schema")
        return schema if schema is not None else (None if body else {})
    if fmt.type == "json_schema":
        schema = schema_of(fmt.json_schema, "schema_json", "schema")
        return {} if schema is None else schema
    raise ParamError('response_format type must be one of "text", "json_object" or '
                     f'"json_schema", but got: {fmt.type}')


def _first_set(req: Any, names: Iterable[str]) -> int | None:
    present = {f.name for f in req.DESCRIPTOR.fields}
    for name in names:
        if name in present and req.HasField(name):
            return int(getattr(req, name))
    return None


def resolve_n_predict(requested: int | None, default: int) -> int:
    """The request's n_predict, else (unset or -1) the server's -n: the pinned llama-server
    lets the request's limit take priority over the global one, above it too."""
    if requested is not None and requested < -1:
        raise ParamError(f"Field 'n_predict': Value must be between -1 <= value <= "
                         f"{_INT32_MAX}, but got {requested}", field="n_predict")
    if requested is None or requested < 0:
        return default
    return requested


def _n_probs(req: Any) -> int | None:
    """n_probs, or OpenAI's spelling: `logprobs` (a count on completions; a flag plus
    `top_logprobs` on chat)."""
    if req.HasField("n_probs"):
        return int(req.n_probs)
    chat = isinstance(req.logprobs, bool)
    if chat and req.HasField("top_logprobs") and not req.logprobs:
        raise ParamError("top_logprobs requires logprobs to be set to true",
                         field="top_logprobs")
    if not req.HasField("logprobs"):
        return None
    if chat:
        if not req.logprobs:
            return None
        # llama-server's count when top_logprobs is not given
        return req.top_logprobs if req.HasField("top_logprobs") else 20
    return int(req.logprobs)


def completion_params(req: Any, defaults: Defaults, vocab: Vocab) -> CompletionParams:
    """Every field of `req` that the engine uses, resolved against the server's defaults."""
    choices_of(req, defaults.n_slots)
    check_bounds(req)
    d = defaults.params
    sampling = sampling_params(req, d.sampling, vocab)
    c: dict[str, Any] = {f: getattr(req, f) for f in _COMPLETION_FIELDS if req.HasField(f)}
    if c.get("t_max_predict_ms") == -1:  # llama-server's lower bound; any value <= 0 is off
        c["t_max_predict_ms"] = 0
    n_probs = _n_probs(req)
    if n_probs is not None:
        limits.check_n_probs(n_probs)
        c["n_probs"] = n_probs
    c["n_predict"] = resolve_n_predict(
        _first_set(req, ("n_predict", "max_completion_tokens", "max_tokens")),
        d.n_predict)
    stop = stop_of(req)
    if stop:
        limits.check_stop_count(stop)
        c["stop"] = stop
    params = replace(d, sampling=sampling, post_sampling_probs=req.post_sampling_probs,
                     return_tokens=req.return_tokens, timings_per_token=req.timings_per_token,
                     return_progress=req.return_progress and req.stream, streaming=req.stream,
                     lora=request_adapters(req, defaults.loras),
                     speculative=spec_params_of(req, d.speculative), **c)
    params.validate(defaults.n_slots)
    return params


def choices_of(req: Any, n_slots: int) -> int:
    """`n_cmpl`, or OpenAI's `n`: choices per prompt, 1 to the server's slots (llama-server's
    limit: each choice is a sequence of its own, and more than the slots could never run
    side by side, its prompt decoded once and copied)."""
    for name in ("n_cmpl", "n"):
        if req.HasField(name):
            n = int(getattr(req, name))
            if not 1 <= n <= n_slots:
                raise ParamError(f"{name} must be between 1 and {n_slots} (the server's slots, "
                                 f"--parallel); got {n}", field=name)
            return n
    return 1
