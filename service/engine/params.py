"""Per-request generation parameters, validated once before a request reaches the engine.

Defaults are llama-server's (the spec's /completion options); the server's command-line sampling
flags replace them through `dataclasses.replace` on the defaults object.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from service.engine.speculative import SpecParams

# Canonical sampler names and the aliases llama-server accepts for them.
SAMPLER_NAMES = ("penalties", "dry", "top_n_sigma", "top_k", "typ_p", "top_p", "min_p", "xtc",
                 "temperature", "infill", "adaptive_p")
_ALIASES = {"nucleus": "top_p", "temp": "temperature", "typ": "typ_p", "typical_p": "typ_p"}
for _name in SAMPLER_NAMES:
    _ALIASES[_name] = _name
    _ALIASES[_name.replace("_", "-")] = _name
    _ALIASES[_name.replace("_", "")] = _name

# One-letter codes of --sampling-seq (llama.cpp's own letters).
SAMPLER_LETTERS = {"e": "penalties", "d": "dry", "s": "top_n_sigma", "k": "top_k", "y": "typ_p",
                   "p": "top_p", "m": "min_p", "x": "xtc", "t": "temperature", "i": "infill",
                   "a": "adaptive_p"}

DEFAULT_SAMPLERS = ("penalties", "dry", "top_n_sigma", "top_k", "typ_p", "top_p", "min_p", "xtc",
                    "temperature")


class ParamError(ValueError):
    """A request parameter is out of range or malformed (INVALID_ARGUMENT / HTTP 400).
    `field`: the request field at fault, when one is (the status's BadRequest names it)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def canonical_sampler(name: str) -> str:
    try:
        return _ALIASES[name.strip().lower()]
    except KeyError:
        raise ParamError(
            f"unknown sampler {name!r}; known: {', '.join(SAMPLER_NAMES)}") from None


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.8
    dynatemp_range: float = 0.0
    dynatemp_exponent: float = 1.0
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    typical_p: float = 1.0
    top_n_sigma: float = -1.0
    repeat_penalty: float = 1.1
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    dry_multiplier: float = 0.0
    dry_base: float = 1.75
    dry_allowed_length: int = 2
    dry_penalty_last_n: int = -1
    dry_sequence_breakers: tuple[str, ...] = ("\n", ":", '"', "*")
    xtc_probability: float = 0.0
    xtc_threshold: float = 0.1
    mirostat: int = 0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    seed: int = -1
    min_keep: int = 0
    logit_bias: tuple[tuple[int, float], ...] = ()  # -inf bans the token
    samplers: tuple[str, ...] = DEFAULT_SAMPLERS
    grammar: str = ""
    # The grammar is lazy: it joins the chain once a tool call starts (a chat's tool call under
    # tool_choice "auto"; service.engine.lazy_grammar), not when the chain is built.
    grammar_lazy: bool = False

    def validate(self) -> None:
        finite = {k: v for k, v in self.__dict__.items() if isinstance(v, float)}
        for name, value in finite.items():
            if math.isnan(value) or math.isinf(value):
                raise ParamError(f"{name} must be a finite number", field=name)
        if self.top_k < -1:
            raise ParamError("top_k must be >= 0 (0 or -1: disabled)", field="top_k")
        for name in ("top_p", "min_p", "xtc_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ParamError(f"{name} must be between 0 and 1", field=name)
        if self.repeat_last_n < -1:
            raise ParamError("repeat_last_n must be >= -1", field="repeat_last_n")
        if self.dry_penalty_last_n < -1:
            raise ParamError("dry_penalty_last_n must be >= -1",
                             field="dry_penalty_last_n")
        if self.dry_allowed_length < 0:
            raise ParamError("dry_allowed_length must be >= 0",
                             field="dry_allowed_length")
        if self.repeat_penalty < 0:
            raise ParamError("repeat_penalty must be >= 0", field="repeat_penalty")
        if self.mirostat not in (0, 1, 2):
            raise ParamError("mirostat must be 0, 1 or 2", field="mirostat")
        if self.min_keep < 0 or self.min_keep > 1 << 20:
            raise ParamError("min_keep must be between 0 and 1048576", field="min_keep")
        if self.seed < -1 or self.seed > 0xFFFFFFFF:
            raise ParamError("seed must be -1 (random) or a 32-bit unsigned integer",
                             field="seed")
        for s in self.samplers:
            canonical_sampler(s)


@dataclass(frozen=True)
class CompletionParams:
    n_predict: int = -1
    n_keep: int = 0
    n_indent: int = 0
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    n_probs: int = 0
    post_sampling_probs: bool = False
    t_max_predict_ms: int = 0
    id_slot: int = -1
    cache_prompt: bool = True
    n_cache_reuse: int = 0  # cached runs this long or longer are reused by KV shifting; 0: off
    return_tokens: bool = False
    timings_per_token: bool = False
    # Special tokens rendered in the text all the same (a chat format's markers, llama-server's
    # preserved tokens; service.tool_calls).
    keep_special: frozenset[int] = frozenset()
    # LoRA adapters as (id, scale), scales not 0, by id: the request's `lora` or the global
    # scales when it has none (service.lora resolves it; the engine applies it per decode).
    lora: tuple[tuple[int, float], ...] = ()
    return_progress: bool = False  # prompt_progress messages (streaming requests only)
    n_discard: int = 0  # tokens a context shift drops after n_keep; 0: half of them
    streaming: bool = True  # the request streams (reported by /slots as `stream`)
    # What generation_settings echoes for a chat request: llama-server's chat parser format
    # and the template's generation prompt (service.messages); "" for a plain completion.
    chat_format: str = ""
    generation_prompt: str = ""
    sampling: SamplingParams = field(default_factory=SamplingParams)
    # Draft settings (speculative decoding; service.engine.speculative).
    speculative: SpecParams = field(default_factory=SpecParams)

    def validate(self, n_slots: int) -> None:
        if self.n_predict < -2:
            raise ParamError("n_predict must be >= -1 (-1: no limit)", field="n_predict")
        if self.n_keep < -1:
            raise ParamError("n_keep must be >= -1 (-1: keep the whole prompt)", field="n_keep")
        if not 0 <= self.n_probs <= 100:
            raise ParamError("n_probs must be between 0 and 100", field="n_probs")
        if self.t_max_predict_ms < 0:
            raise ParamError("t_max_predict_ms must be >= 0", field="t_max_predict_ms")
        if not -1 <= self.id_slot < n_slots:
            raise ParamError(f"id_slot must be -1 or a slot id 0..{n_slots - 1}",
                             field="id_slot")
        if any(not isinstance(s, str) for s in self.stop) or len(self.stop) > 64:
            raise ParamError("stop must be a string or a list of at most 64 strings")
        if self.n_discard < 0:  # CVE-2026-21869: a negative one overflowed llama-server's heap
            raise ParamError("n_discard must be >= 0 (0: half of the tokens after n_keep)")
        if self.n_cache_reuse < 0:
            raise ParamError("n_cache_reuse must be >= 0 (0: no reuse by KV shifting)")
        if self.n_indent < 0:
            raise ParamError("n_indent must be >= 0", field="n_indent")
        self.sampling.validate()
