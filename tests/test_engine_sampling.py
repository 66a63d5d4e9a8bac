"""The engine's sampler chains: when build_chain lets sampling preselect the top-k (only when
nothing before the chain's top-k changes logits other than the logit bias's tokens)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

import native
from service.engine.params import SamplingParams
from service.engine.sampling import build_chain

# llama-server's defaults today: repetition penalty off, DRY off, top-n-sigma off.
DEFAULTS = replace(SamplingParams(), repeat_penalty=1.0, samplers=(
    "penalties", "dry", "top_n_sigma", "top_k", "typ_p", "top_p", "min_p", "xtc", "temperature"))


@pytest.fixture(scope="module")
def vocab(tiny_bpe_path: Path) -> native.Vocab:
    return native.Model(tiny_bpe_path).vocab


def _preselected(vocab: native.Vocab, p: SamplingParams,
                 ban: tuple[int, ...] = ()) -> tuple[int, list[int]]:
    with build_chain(vocab, p, ban, n_ctx=512) as chain:
        keep = chain._preselect_keep
        return chain._preselect_k, [keep[i] for i in range(chain._preselect_n_keep)]


def test_defaults_preselect_the_top_k_and_keep_the_biased_tokens(vocab: native.Vocab) -> None:
    assert _preselected(vocab, DEFAULTS) == (40, [])
    eog = tuple(sorted(vocab.eog_tokens()))
    p = replace(DEFAULTS, top_k=7, logit_bias=((42, 1.5),))
    assert _preselected(vocab, p, eog) == (7, sorted({42, *eog}))
    # A sampler after top-k may do anything: it sees only what top-k kept either way.
    assert _preselected(vocab, replace(DEFAULTS, temperature=0.0, top_p=0.5, min_p=0.2,
                                       xtc_probability=0.5))[0] == 40


@pytest.mark.parametrize("change", [
    {"repeat_penalty": 1.1},  # penalties change the logits of every recent token
    {"presence_penalty": 0.5},
    {"dry_multiplier": 0.8},
    {"dry_multiplier": 0.8, "dry_base": 1 - 1e-9},  # 1.0 as the float32 libllama gets
    {"top_n_sigma": 1.0},
    {"grammar": 'root ::= "a"'},
    {"top_k": 0},
    {"mirostat": 2},
    {"samplers": ("temperature", "top_k", "top_p")},  # dynamic temperature sees every token
    {"samplers": ("top_p", "min_p", "temperature")},  # no top-k at all
], ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_no_preselection_when_an_earlier_sampler_sees_every_token(
        vocab: native.Vocab, change: dict[str, object]) -> None:
    assert _preselected(vocab, replace(DEFAULTS, **change))[0] == 0  # type: ignore[arg-type]


def test_penalties_placed_after_top_k_do_not_matter(vocab: native.Vocab) -> None:
    p = replace(DEFAULTS, repeat_penalty=1.3, samplers=("top_k", "penalties", "temperature"))
    assert _preselected(vocab, p)[0] == 40


def test_a_top_k_as_large_as_the_vocabulary_is_not_preselected(vocab: native.Vocab) -> None:
    for k in (vocab.n_tokens, 2**31 - 1):  # the largest top_k a request can carry
        assert _preselected(vocab, replace(DEFAULTS, top_k=k))[0] == 0


def test_penalties_apply_only_where_the_list_names_them(vocab: native.Vocab) -> None:
    """As common/sampling.cpp of the pinned llama.cpp: a list without "penalties" has none,
    so nothing before top-k changes the logits and the top-k may be preselected."""
    p = replace(DEFAULTS, repeat_penalty=1.3, samplers=("top_k", "temperature"))
    assert _preselected(vocab, p)[0] == 40
    assert _preselected(vocab, replace(p, samplers=("penalties", "top_k")))[0] == 0
