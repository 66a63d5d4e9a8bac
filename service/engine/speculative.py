"""Speculative decoding's pure parts: a request's draft settings, which requests may speculate
and how many tokens they may draft, and n-gram (prompt lookup) drafting. No native calls.

A speculating slot's next decode carries its last sampled token plus up to k drafted tokens,
with logits on all 1+k positions; the target then samples position by position with the
request's own sampler chain and keeps draft tokens while they equal what it sampled
(service/engine/speculation.py), so the output is exactly what it would have been without
speculation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

INT32_MAX = 2**31 - 1
# llama-server's names (--spec-type) of the kinds served here; the others are refused.
DRAFT_SIMPLE = "draft-simple"
NGRAM_SIMPLE = "ngram-simple"


@dataclass(frozen=True)
class SpecParams:
    """A request's draft settings: the server's (--spec-draft-n-max, --spec-draft-n-min,
    --spec-draft-p-min) unless it sets `speculative.n_max/n_min/p_min`."""

    n_max: int = 3  # most tokens a draft model proposes per step
    n_min: int = 0  # a shorter draft is not verified at all
    p_min: float = 0.0  # the draft model stops below this confidence in its best token
    # The request's own speculative.n_max: it also caps n-gram drafts (0: no speculation).
    cap: int | None = None
    types: str = "none"  # the server's kinds, as generation_settings' speculative.types


@dataclass(frozen=True)
class NgramSettings:
    """ngram-simple (llama-server's --spec-ngram-simple-size-n/-m): the last size_n tokens are
    looked up earlier in the request's own tokens, and the size_m tokens that followed there
    are the draft."""

    size_n: int = 12
    size_m: int = 48


def spec_params_of(req: Any, defaults: SpecParams) -> SpecParams:
    """The request's `speculative.*` fields over the server's, validated with the bounds of
    llama-server's schema (n_max, n_min >= 0, p_min in [0, 1]); n_min is at most n_max."""
    from service.engine.params import ParamError  # params.py imports this module

    given: dict[str, Any] = {}
    if "speculative_n_max" in req.DESCRIPTOR.fields_by_name:  # every generation request
        if req.HasField("speculative_n_max"):
            given["n_max"] = req.speculative_n_max
        if req.HasField("speculative_n_min"):
            given["n_min"] = req.speculative_n_min
        if req.HasField("speculative_p_min"):
            given["p_min"] = req.speculative_p_min
    for name in ("n_max", "n_min"):
        if name in given and not 0 <= given[name] <= INT32_MAX:
            raise ParamError(f"Field 'speculative.{name}': Value must be between 0 <= value <= "
                             f"{INT32_MAX}, but got {given[name]}", field=f"speculative.{name}")
    p_min = given.get("p_min")
    if p_min is not None and (math.isnan(p_min) or not 0.0 <= p_min <= 1.0):
        raise ParamError(f"Field 'speculative.p_min': Value must be between 0 <= value <= 1, "
                         f"but got {p_min}", field="speculative.p_min")
    n_max = given.get("n_max", defaults.n_max)
    n_min = min(given.get("n_min", defaults.n_min), n_max)
    return SpecParams(n_max=n_max, n_min=n_min, p_min=given.get("p_min", defaults.p_min),
                      cap=given.get("n_max", defaults.cap), types=defaults.types)


def why_not(task: Any) -> str:
    """Why a generating request does not speculate ("" if it may): the thinking budget forces
    tokens in place of sampling, one position at a time. (A grammar and n_probs speculate:
    service/engine/speculation.py verifies each position with the grammar advanced by the
    kept tokens before it, and reads each position's probabilities.)"""
    if task.budget is not None:
        return "thinking budget"
    if task.embedding:
        return "embedding"
    if task.media:  # drafts from a history with media placeholders (as llama-server: none)
        return "media"
    return ""


def draft_room(task: Any, n_ctx_seq: int, n_max: int) -> int:
    """How many tokens `task` may draft this step: at most n_max, and few enough that every
    token the step can accept stays below the slot's last cells (a full slot stops or shifts
    exactly as without speculation: never inside a speculative step) and within n_predict."""
    room = min(n_max, n_ctx_seq - task.n_past - 3)
    if task.n_predict >= 0:
        room = min(room, task.n_predict - len(task.generated) - 1)
    return int(max(room, 0))


def ngram_draft(history: Sequence[int], settings: NgramSettings, k: int) -> list[int]:
    """Prompt lookup: the tokens that followed the latest earlier occurrence of the history's
    last size_n tokens (at most size_m and k of them); [] without one. `history` ends with the
    last sampled token. Like llama-server's ngram-simple, a history shorter than
    size_n + size_m + 2 tokens, or a continuation shorter than size_n, proposes nothing."""
    n, total = settings.size_n, len(history)
    if k <= 0 or total <= n + settings.size_m + 2:
        return []
    j = _latest_start(history, n)
    if j < 0:
        return []
    follow = list(history[j + n:min(j + n + settings.size_m, total - 1)])
    if len(follow) < n:
        return []
    return follow[:k]


def _latest_start(history: Sequence[int], n: int) -> int:
    """The latest j in 1 .. len - n - 2 where history[j:j + n] equals the last n tokens (the
    pattern's own start and the one just before it excluded, as llama-server's ngram-simple
    scans), or -1.

    A Python scan back through a context without a match cost ~30 ns a token, every step (1 ms
    at 32k). Here windows of the history, from the end and growing 4x, are reversed and
    searched with list.index (in C) for the pattern's token that is rarest in the last
    _PROBE_WINDOW tokens; a recent match is found in the first, small window."""
    total = len(history)
    pattern = list(history[total - n:])
    pattern.reverse()  # as it reads in a reversed window
    recent = list(history[max(0, total - _PROBE_WINDOW):])
    q = min(range(n), key=lambda t: recent.count(pattern[t]))
    probe, top, width = pattern[q], total - n - 2, _FIRST_WINDOW
    while top >= 1:
        bottom = max(1, top - width + 1)  # starts bottom .. top, the latest first
        window = list(history[bottom:top + n])
        window.reverse()  # a match starting at s begins at top - s here
        pos, stop = q, top - bottom + q + 1
        while True:
            try:
                pos = window.index(probe, pos, stop)
            except ValueError:
                break
            if window[pos - q:pos - q + n] == pattern:
                return top - (pos - q)
            pos += 1
        top, width = bottom - 1, 4 * width
    return -1


_PROBE_WINDOW = 256
_FIRST_WINDOW = 256


def parse_types(text: str) -> tuple[str, ...]:
    """--spec-type's comma-separated kinds: those served here, in order; "none" alone turns
    speculation off (as in llama-server). Raises ValueError naming a kind not served."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    if "none" in names:
        return ()
    served = (DRAFT_SIMPLE, NGRAM_SIMPLE)
    known = ("draft-eagle3", "draft-mtp", "draft-dflash", "draft-dspark", "ngram-map-k",
             "ngram-map-k4v", "ngram-mod", "ngram-cache")
    for name in names:
        if name in known:
            raise ValueError(f"--spec-type {name} is not supported: llama-grpc-server serves "
                             f"{', '.join(served)} (and none)")
        if name not in served:
            raise ValueError(f"unknown speculative type: {name}")
    return tuple(dict.fromkeys(names))
