"""Builds a request's libllama sampler chain, in llama-server's order, and reads probabilities.

Chain: logit bias (user biases, plus every end-of-generation token when ignore_eos) -> grammar
-> the `samplers` list in order -> dist; or, with mirostat 1/2, temperature and mirostat alone.
The repetition penalties run where the list names them ("penalties", first by default) and not
at all when it does not, nor with mirostat (common/sampling.cpp of the pinned llama.cpp).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from native import SamplerChain, Vocab
from native.sampler import float32, top_logits
from service.engine.params import SamplingParams, canonical_sampler


def build_chain(vocab: Vocab, p: SamplingParams, ban_tokens: Iterable[int] = (),
                n_ctx: int = 0) -> SamplerChain:
    chain = SamplerChain(vocab)
    try:
        bias = dict(p.logit_bias)
        for tok in ban_tokens:
            bias[tok] = float("-inf")
        if bias:
            chain.logit_bias(bias)
        if p.grammar and not p.grammar_lazy:  # a lazy one: service.engine.lazy_grammar
            chain.grammar(p.grammar)
        min_keep = max(p.min_keep, 1)
        names = [canonical_sampler(s) for s in p.samplers]
        last_n = n_ctx if p.repeat_last_n == -1 else p.repeat_last_n
        if p.mirostat == 1:
            chain.temp(p.temperature).mirostat(p.mirostat_tau, p.mirostat_eta, 100, p.seed)
            return chain
        if p.mirostat == 2:
            chain.temp(p.temperature).mirostat_v2(p.mirostat_tau, p.mirostat_eta, p.seed)
            return chain
        for name in names:
            _add_named(chain, name, p, min_keep, last_n, n_ctx)
        chain.dist(p.seed)
        if _top_k_comes_first(p, names):
            chain.preselect_top_k(p.top_k, list(bias))
        return chain
    except BaseException:
        chain.close()
        raise


def penalties_on(p: SamplingParams) -> bool:
    """Whether the repetition penalties change anything (libllama's own test)."""
    return p.repeat_last_n != 0 and not (
        p.repeat_penalty == 1.0 and p.frequency_penalty == 0.0 and p.presence_penalty == 0.0)


def dry_on(p: SamplingParams) -> bool:
    """Whether the DRY sampler changes anything (libllama's own test, on the float32 values
    it gets: a dry_base just below 1 rounds to 1 there)."""
    return (float32(p.dry_multiplier) != 0.0 and float32(p.dry_base) >= 1.0
            and p.dry_penalty_last_n != 0)


def _top_k_comes_first(p: SamplingParams, names: list[str]) -> bool:
    """Whether every sampler before the chain's top-k, except the logit bias, leaves every
    logit as it is (with llama-server's defaults: penalties, DRY and top-n-sigma are off), so
    that sampling may rank the vocabulary once and hand the chain only the best tokens."""
    # (a lazy grammar turns preselection off when it joins: SamplerChain.insert_grammar)
    if (p.grammar and not p.grammar_lazy) or p.top_k <= 0 or "top_k" not in names:
        return False
    before = names[:names.index("top_k")]
    for name in before:
        if name == "penalties" and not penalties_on(p):
            continue
        if name == "dry" and not dry_on(p):
            continue
        if name == "top_n_sigma" and p.top_n_sigma <= 0.0:
            continue
        return False
    return True


def _add_named(chain: SamplerChain, name: str, p: SamplingParams, min_keep: int, last_n: int,
               n_ctx: int) -> None:
    if name == "penalties":
        chain.penalties(last_n, p.repeat_penalty, p.frequency_penalty, p.presence_penalty)
    elif name == "dry":
        dry_last_n = n_ctx if p.dry_penalty_last_n == -1 else p.dry_penalty_last_n
        chain.dry(p.dry_multiplier, p.dry_base, p.dry_allowed_length, dry_last_n,
                  p.dry_sequence_breakers)
    elif name == "top_k":
        chain.top_k(p.top_k)
    elif name == "typ_p":
        chain.typical(p.typical_p, min_keep)
    elif name == "top_p":
        chain.top_p(p.top_p, min_keep)
    elif name == "min_p":
        chain.min_p(p.min_p, min_keep)
    elif name == "xtc":
        chain.xtc(p.xtc_probability, p.xtc_threshold, min_keep, p.seed)
    elif name == "temperature":
        chain.temp_ext(p.temperature, p.dynatemp_range, p.dynatemp_exponent)
    elif name == "top_n_sigma":
        chain.top_n_sigma(p.top_n_sigma)
    elif name == "infill":
        chain.infill()
    elif name == "adaptive_p":
        chain.adaptive_p(0.5, 0.9, p.seed)


@dataclass(frozen=True)
class TokenProb:
    id: int
    p: float  # probability (post-sampling) or log-probability (pre-sampling), see `is_logprob`


def top_probs(logits: memoryview[float], n: int) -> tuple[list[TokenProb], float]:
    """Softmax over the raw logits: the n most likely tokens as (id, logprob), plus logsumexp.

    The logsumexp lets the caller get the sampled token's logprob as logit - lse.
    """
    ids, lse = top_logits(logits, n)
    return [TokenProb(i, logits[i] - lse) for i in ids], lse
