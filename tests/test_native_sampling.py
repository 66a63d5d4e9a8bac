"""Sampling several sequences at once (native.sampler.sample_parallel, our C helper): the same
tokens as llama.cpp's own llama_sampler_sample, whatever the thread count, and the same chain
state afterwards (the tokens were accepted); with a top-k preselection too."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import native
from native._ffi import lib
from native.sampler import NO_TOKEN, PRESELECT_MAX_KEEP, argmax_logit, sample_parallel

N_SEQ = 6


@pytest.fixture(scope="module")
def model(tiny_bpe_path: Path) -> native.Model:
    return native.Model(tiny_bpe_path)


ChainMaker = Callable[[native.SamplerChain, int], native.SamplerChain]


def _penalized(c: native.SamplerChain, seed: int) -> native.SamplerChain:
    # Stochastic chains with different seeds: any mix-up of rows, chains or accepted tokens
    # shows up as different tokens within a few steps.
    return c.penalties(64, 1.3, 0.2, 0.2).top_k(50).temp(1.5).dist(100 + seed)


def _generate(model: native.Model, n_threads: int | None, make: ChainMaker = _penalized,
              preselect: tuple[int, list[int]] | None = None,
              steps: int = 12) -> list[list[int]]:
    """Generate `steps` tokens for N_SEQ sequences decoded together; n_threads None samples
    each with llama.cpp's llama_sampler_sample instead of our helper."""
    params = native.ContextParams(n_ctx=256 * N_SEQ, n_seq_max=N_SEQ, n_batch=512, n_threads=2)
    prompts = [model.vocab.tokenize(f"Sequence number {s} says") for s in range(N_SEQ)]
    chains = [make(native.SamplerChain(model.vocab), s) for s in range(N_SEQ)]
    if preselect is not None:
        for c in chains:
            c.preselect_top_k(*preselect)
    out: list[list[int]] = [[] for _ in range(N_SEQ)]
    with native.Context(model, params) as ctx:
        batch = native.Batch(512)
        idx = [batch.add_sequence(p, 0, s, True) for s, p in enumerate(prompts)]
        pos = [len(p) for p in prompts]
        for _ in range(steps):
            ctx.decode(batch)
            if n_threads is None:
                tokens = [int(lib.llama_sampler_sample(c.ptr, ctx.ptr, i))
                          for c, i in zip(chains, idx, strict=True)]
            else:
                tokens = sample_parallel(ctx, list(zip(chains, idx, strict=True)), n_threads)
            batch.clear()
            for s, tok in enumerate(tokens):
                out[s].append(tok)
                idx[s] = batch.add(tok, pos[s], s, True)
                pos[s] += 1
    for c in chains:
        c.close()
    return out


def test_parallel_sampling_matches_llama_sampler_sample(model: native.Model) -> None:
    reference = _generate(model, None)
    assert len({tuple(seq) for seq in reference}) == N_SEQ  # the sequences really differ
    for n_threads in (1, 3, N_SEQ, 64):
        assert _generate(model, n_threads) == reference, f"{n_threads} threads"


# Chains whose samplers before top-k touch only the bias tokens, as the engine builds them.
_BIAS = {5: 0.6, 17: float("-inf"), 300: 0.45}  # logits here span about ±0.7
_PRESELECTABLE: dict[str, tuple[ChainMaker, int]] = {
    "greedy, temperature 0": (lambda c, s: c.logit_bias(_BIAS).penalties(64, 1.0, 0.0, 0.0)
                              .top_k(40).top_p(0.95).min_p(0.05).temp_ext(0.0, 0.0, 1.0)
                              .dist(s), 40),
    "llama-server defaults, temperature 0.8": (
        lambda c, s: c.dry(0.0, 1.75, 2, -1, ["\n"]).top_n_sigma(-1.0).top_k(40).typical(1.0)
        .top_p(0.95).min_p(0.05).xtc(0.0, 0.1).temp_ext(0.8, 0.0, 1.0).dist(7 + s), 40),
    "wide top-k, hot": (lambda c, s: c.logit_bias(_BIAS).top_k(400).top_p(0.99)
                        .temp(2.0).dist(11 * s), 400),
    "top-k 1": (lambda c, s: c.top_k(1).dist(s), 1),
}


@pytest.mark.parametrize("name", list(_PRESELECTABLE))
def test_top_k_preselection_gives_the_same_tokens(model: native.Model, name: str) -> None:
    make, k = _PRESELECTABLE[name]
    full = _generate(model, 3, make)
    assert len({tuple(seq) for seq in full}) > 1 or name == "top-k 1"
    assert _generate(model, 3, make, preselect=(k, list(_BIAS))) == full
    assert _generate(model, None, make) == full  # and llama.cpp's own sampling agrees


@pytest.mark.parametrize("k", [10**6, 2**31 - 1])
def test_a_top_k_beyond_the_vocabulary_samples_as_usual(model: native.Model, k: int) -> None:
    def make(c: native.SamplerChain, seed: int) -> native.SamplerChain:
        return c.top_k(k).temp(1.0).dist(5 + seed)

    full = _generate(model, 2, make, steps=4)
    assert _generate(model, 2, make, preselect=(k, [1, 2]), steps=4) == full


def test_a_long_keep_list_samples_as_usual(model: native.Model) -> None:
    # Beyond PRESELECT_MAX_KEEP kept tokens, no preselection (it would cost more than it saves).
    bias = {t: 2.0 for t in range(500, 500 + PRESELECT_MAX_KEEP + 1)}

    def make(c: native.SamplerChain, seed: int) -> native.SamplerChain:
        return c.logit_bias(bias).top_k(20).temp(1.0).dist(9 + seed)

    full = _generate(model, 2, make, steps=4)
    assert _generate(model, 2, make, preselect=(20, list(bias)), steps=4) == full


def test_a_chain_that_selects_nothing_is_reported_not_aborted(model: native.Model) -> None:
    params = native.ContextParams(n_ctx=256, n_seq_max=2, n_batch=64, n_threads=2)
    with native.Context(model, params) as ctx:
        batch = native.Batch(64)
        i0 = batch.add_sequence(model.vocab.tokenize("a"), 0, 0, True)
        i1 = batch.add_sequence(model.vocab.tokenize("b"), 0, 1, True)
        ctx.decode(batch)
        # A chain without a selecting sampler (no greedy or dist) leaves `selected` unset.
        with native.SamplerChain(model.vocab).top_k(5) as bad, \
                native.SamplerChain(model.vocab).greedy() as good:
            tokens = sample_parallel(ctx, [(bad, i0), (good, i1)], 2)
            assert tokens[0] == NO_TOKEN
            assert 0 <= tokens[1] < model.vocab.n_tokens
            with pytest.raises(native.SamplerError):
                bad.sample(ctx, i0)


def test_a_grammar_that_rules_out_every_token_selects_none(model: native.Model) -> None:
    """A grammar that accepts only the empty text, with end-of-generation banned: every
    candidate is ruled out. Accepting the one `dist` picks anyway would make libllama's grammar
    throw through the C API and end the process; both sampling paths report no token."""
    ban = {t: float("-inf") for t in model.vocab.eog_tokens()}
    params = native.ContextParams(n_ctx=256, n_seq_max=1, n_batch=64, n_threads=2)
    with native.Context(model, params) as ctx:
        batch = native.Batch(64)
        i0 = batch.add_sequence(model.vocab.tokenize("a"), 0, 0, True)
        ctx.decode(batch)
        with native.SamplerChain(model.vocab).logit_bias(ban).grammar('root ::= ""').dist(1) \
                as chain:
            assert sample_parallel(ctx, [(chain, i0)], 1) == [NO_TOKEN]
            with pytest.raises(native.SamplerError):
                chain.sample_with_probs(ctx, i0, 3)


def test_invalid_parallel_requests_raise(model: native.Model) -> None:
    params = native.ContextParams(n_ctx=256, n_seq_max=1, n_batch=64, n_threads=2)
    with native.Context(model, params) as ctx, native.SamplerChain(model.vocab) as chain:
        chain.greedy()
        batch = native.Batch(64)
        i = batch.add_sequence(model.vocab.tokenize("hello there"), 0, 0, True)
        ctx.decode(batch)
        with pytest.raises(native.InvalidInputError):
            sample_parallel(ctx, [(chain, i), (chain, i)], 2)  # one chain on two threads
        with pytest.raises(native.InvalidInputError):
            sample_parallel(ctx, [(chain, 0)], 1)  # a position with no logits
        with pytest.raises(native.InvalidInputError):
            chain.preselect_top_k(40, [model.vocab.n_tokens])
        with pytest.raises(native.InvalidInputError):
            chain.preselect_top_k(0)
        assert sample_parallel(ctx, [], 4) == []


def test_argmax_logit_takes_the_lower_id_on_a_tie_and_refuses_an_empty_row() -> None:
    import array
    row = array.array("f", [0.5, 2.0, -1.0, 2.0, float("-inf")])
    assert argmax_logit(memoryview(row)) == 1
    assert argmax_logit(memoryview(array.array("f", [float("-inf")] * 3))) == 0
    with pytest.raises(ValueError, match="empty"):
        argmax_logit(memoryview(array.array("f")))
