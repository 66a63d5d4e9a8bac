"""Small llama.v1 messages as llama-server's JSON, written field by field: they go out with
every streamed token, where a generic message-to-dict conversion would cost too much."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rest_bridge.jsonio import Json


def timings_json(t: Any) -> dict[str, Json]:
    out: dict[str, Json] = {
        "cache_n": t.cache_n, "prompt_n": t.prompt_n, "prompt_ms": t.prompt_ms,
        "prompt_per_token_ms": t.prompt_per_token_ms, "prompt_per_second": t.prompt_per_second,
        "predicted_n": t.predicted_n, "predicted_ms": t.predicted_ms,
        "predicted_per_token_ms": t.predicted_per_token_ms,
        "predicted_per_second": t.predicted_per_second,
    }
    if t.HasField("draft_n"):
        out["draft_n"] = t.draft_n
    if t.HasField("draft_n_accepted"):
        out["draft_n_accepted"] = t.draft_n_accepted
    return out


def progress_json(p: Any) -> dict[str, Json]:
    # llama-server writes whole milliseconds
    return {"total": p.total, "cache": p.cache, "processed": p.processed,
            "time_ms": int(p.time_ms)}


def usage_json(u: Any) -> dict[str, Json]:
    return {"completion_tokens": u.completion_tokens, "prompt_tokens": u.prompt_tokens,
            "total_tokens": u.total_tokens,
            "prompt_tokens_details": {"cached_tokens": u.prompt_tokens_details.cached_tokens}}


def sum_usage(usages: Sequence[dict[str, Json]],
              prompt_of: Sequence[int] | None = None) -> dict[str, Json]:
    """One `usage` for several completions of a request, as OpenAI counts them: every
    completion's tokens, and each prompt's once (`prompt_of[i]`: the prompt `usages[i]`
    completed, its first usage counting for it; None: a prompt each). llama-server counts
    only the first completion of the first prompt (a deliberate difference, docs/fidelity.md)."""
    prompts = range(len(usages)) if prompt_of is None else prompt_of
    completion = prompt = cached = 0
    seen: set[int] = set()
    for u, p in zip(usages, prompts, strict=True):
        completion += u["completion_tokens"]
        if p not in seen:
            seen.add(p)
            prompt += u["prompt_tokens"]
            cached += u["prompt_tokens_details"]["cached_tokens"]
    return {"completion_tokens": completion, "prompt_tokens": prompt,
            "total_tokens": completion + prompt, "prompt_tokens_details": {"cached_tokens": cached}}


def choices_per_prompt(request: Any) -> int:
    """The request's `n_cmpl`, else `n` (the service's range checks have passed), else 1."""
    fields = request.DESCRIPTOR.fields_by_name
    for name in ("n_cmpl", "n"):
        if name in fields and request.HasField(name):
            return max(1, int(getattr(request, name)))
    return 1


def _candidate(c: Any) -> dict[str, Json]:
    out: dict[str, Json] = {"id": c.id, "token": c.token, "bytes": list(c.bytes)}
    if c.HasField("prob"):
        out["prob"] = c.prob
    else:
        out["logprob"] = c.logprob
    return out


def probability_json(p: Any) -> dict[str, Json]:
    """One `completion_probabilities` item: `logprob`/`top_logprobs`, or with
    post_sampling_probs `prob`/`top_probs`."""
    out: dict[str, Json] = {"id": p.id, "token": p.token, "bytes": list(p.bytes)}
    if p.HasField("prob"):
        out["prob"] = p.prob
        out["top_probs"] = [_candidate(c) for c in p.top_probs]
    else:
        out["logprob"] = p.logprob
        out["top_logprobs"] = [_candidate(c) for c in p.top_logprobs]
    return out


def probabilities_json(probs: Any) -> list[dict[str, Json]]:
    return [probability_json(p) for p in probs]
