"""A request's sampler chain, built and primed before the engine runs it (off the event loop:
on the service's worker threads, or on the engine thread for tasks made without one)."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from native import SamplerChain, Vocab
from service.engine.params import CompletionParams
from service.engine.sampling import build_chain, dry_on, penalties_on


def build_task_chain(params: CompletionParams, vocab: Vocab, eog: Collection[int], n_ctx: int,
                     prompt: Sequence[int]) -> SamplerChain:
    """The chain for one prompt of a request (each prompt needs its own: chains keep state).

    Raises SamplerError / LlamaError / ParamError for a grammar or bias libllama refuses."""
    p = params.sampling
    chain = build_chain(vocab, p, eog if params.ignore_eos else (), n_ctx)
    # Repetition penalties see the prompt too, as in llama-server (not with a grammar, whose
    # state must start at the first generated token). Only the penalty and DRY samplers keep a
    # history; when both are off, feeding them the prompt (up to a whole context of tokens)
    # would only cost time before the first token.
    if (p.grammar and not p.grammar_lazy) or not (penalties_on(p) or dry_on(p)):
        return chain
    window = max(p.repeat_last_n if p.repeat_last_n >= 0 else n_ctx,
                 p.dry_penalty_last_n if p.dry_penalty_last_n >= 0 else n_ctx)
    if window:
        tail = prompt[-window:]
        if tail and min(tail) < 0:  # media placeholders (service/engine/media.py): no tokens
            tail = [t for t in tail if t >= 0]
        chain.accept_many(tail)
    return chain
