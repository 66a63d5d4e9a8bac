"""Speculation under a grammar and with probabilities: each drafted position is sampled with the
grammar advanced by the tokens kept before it, so the output is token for token the one without
speculation (greedy), and each emitted token's probabilities are the target's at its position.

Real engine over real libllama (the helpers of tests/test_speculative_engine.py): tiny-bpe as
its own draft (it agrees: drafts are verified, most are kept), tiny-bpe-draft (it disagrees:
the grammar rejects or the target differs), and n-gram lookup on a repeated line held by a
grammar (the bench's n-gram scenario).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest

import native
from native.testmodels import ensure_model
from service.engine.params import CompletionParams, SamplingParams
from service.engine.speculative import SpecParams
from tests.test_speculative_engine import PROMPTS, _record, _Recorder, _serve

pytestmark = pytest.mark.slow
GREEDY = SamplingParams(temperature=0.0)
LINE = "x = x + 1\n"
GRAMMARS = {
    "exclusion": 'root ::= [^x]*',  # some drafted tokens are not allowed
    "finite": 'root ::= [a-z ]{1,24} "."',  # ends (EOS forced) inside a speculative step
    "choice": 'root ::= ("yes" | "no" | "maybe") (" " [0-9]+)*',
}


def _both(target: Path, n_slots: int, draft: str, params: list[CompletionParams],
          prompts: list[list[int]], ngram: bool = False) -> tuple[list[_Recorder],
                                                                  list[_Recorder]]:
    """The requests without speculation, then with it."""
    outputs = []
    for spec in (False, True):
        server = _serve(target, n_slots, draft if spec else "", ngram and spec)
        try:
            outputs.append(_record(server.engine, params, prompts))
        finally:
            server.close()
    return outputs[0], outputs[1]


def _grammar_params(n_max: int) -> list[CompletionParams]:
    spec = SpecParams(n_max=n_max, cap=n_max)
    grammars = list(GRAMMARS.values())
    return [CompletionParams(n_predict=40, speculative=spec,
                             sampling=replace(GREEDY, grammar=grammars[i % len(grammars)]))
            for i in range(len(PROMPTS))]


@pytest.mark.parametrize(("draft", "n_slots", "n_max"), [
    ("tiny-bpe", 1, 8), ("tiny-bpe", 4, 4), ("tiny-bpe-draft", 4, 4), ("tiny-bpe-draft", 1, 16)])
def test_greedy_output_under_a_grammar_is_the_same(draft: str, n_slots: int,
                                                   n_max: int) -> None:
    params = _grammar_params(n_max)
    plain, spec = _both(ensure_model("tiny-bpe"), n_slots, draft, params, PROMPTS)
    for i, (p, s) in enumerate(zip(plain, spec, strict=True)):
        assert s.final.tokens == p.final.tokens, f"request {i}"
        assert (s.final.content, s.final.stop_type) == (p.final.content, p.final.stop_type)
    assert {p.final.stop_type for p in plain} >= {"eos", "limit"}  # finite grammars end
    drafted = [s.final.timings.draft_n for s in spec]
    assert sum(drafted) > 0 and all(d > 0 for d, p in zip(drafted, plain, strict=True)
                                    if len(p.final.tokens) > 2)
    if draft == "tiny-bpe":  # the agreeing draft: kept unless the grammar refuses it
        assert sum(s.final.timings.draft_n_accepted for s in spec) > 0


def test_ngram_drafts_under_a_repeating_grammar_are_kept() -> None:
    """The bench's n-gram scenario: a repeated line, a grammar that keeps repeating it."""
    target = ensure_model("tiny-bpe-loop")
    model = native.Model(target)
    try:
        prompt = model.vocab.tokenize(LINE * 16)
    finally:
        model.close()
    params = [CompletionParams(n_predict=48, ignore_eos=True,
                               speculative=SpecParams(n_max=8, cap=8),
                               sampling=replace(GREEDY, grammar='root ::= ("x = x + 1\\n")+'))]
    plain, spec = _both(target, 1, "", params, [prompt], ngram=True)
    assert spec[0].final.tokens == plain[0].final.tokens
    assert spec[0].final.content.startswith(LINE * 2)
    assert spec[0].final.timings.draft_n_accepted > 0


@pytest.mark.parametrize("post_sampling", [False, True])
def test_probabilities_are_the_targets_at_each_position(post_sampling: bool) -> None:
    base = CompletionParams(n_predict=24, n_probs=3, post_sampling_probs=post_sampling,
                            sampling=GREEDY, speculative=SpecParams(n_max=4, cap=4))
    params = [base, replace(base, sampling=replace(GREEDY, grammar=GRAMMARS["exclusion"])),
              base, replace(base, n_probs=0)]
    prompts = PROMPTS[:4]
    plain, spec = _both(ensure_model("tiny-bpe"), 2, "tiny-bpe", params, prompts)
    for p, s in zip(plain, spec, strict=True):
        assert s.final.tokens == p.final.tokens
        assert len(s.probs) == (len(p.final.tokens) if p is not plain[3] else 0)
        for a, b in zip(p.probs, s.probs, strict=True):
            assert (a.id, a.post_sampling) == (b.id, b.post_sampling)
            # A position verified in a batch may round its logits differently (llama.cpp's
            # kernels vary with a batch's size): equal to a few ulps of the float32 logits.
            assert math.isclose(a.value, b.value, rel_tol=1e-3, abs_tol=1e-4)
            assert [t for t, _ in a.top] == [t for t, _ in b.top]
    assert all(s.final.timings.draft_n_accepted > 0 for s in spec[:3])
