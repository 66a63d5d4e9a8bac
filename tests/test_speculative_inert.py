"""The cheap agreeing draft (native.testmodels `spm-deep-draft` for `spm-deep`): the target is
the draft's layers plus inert ones, so greedy outputs agree token for token, and speculation
with it keeps (nearly) every drafted token while the output stays the target's own.
"""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

import native
from native.context import ContextParams
from native.sampler import top_logits
from native.testmodels import ensure_model
from service.engine.params import CompletionParams, SamplingParams
from service.engine.speculative import SpecParams
from tests.test_speculative_engine import _run, _serve

pytestmark = pytest.mark.slow
N_PREDICT = 32
# Llama 2 SPM ids: BOS, then ordinary tokens.
PROMPTS = [[1, *(300 + (i * 53 + j * 17) % 30000 for j in range(5 + 4 * i))] for i in range(4)]


def _greedy(path: Path, prompt: list[int], n: int) -> list[int]:
    """n greedy tokens of the model at `path`, one decode a token, read off its raw logits."""
    model = native.Model(path)
    ctx = native.Context(model, ContextParams(n_ctx=256, n_threads=1, n_threads_batch=1))
    batch = native.Batch(256)
    out: list[int] = []
    try:
        batch.add_sequence(prompt, 0, 0, True)
        pos = len(prompt)
        while True:
            ctx.decode(batch)
            ids, _ = top_logits(ctx.logits_ith(batch.n_tokens - 1), 1)
            out.append(ids[0])
            if len(out) == n:
                return out
            batch.clear()
            batch.add(ids[0], pos, 0, True)
            pos += 1
    finally:
        ctx.close()
        model.close()


def _tensors(path: Path) -> dict[str, np.ndarray]:
    reader = gguf.GGUFReader(path)
    return {t.name: np.array(t.data) for t in reader.tensors}


def test_the_target_is_the_draft_plus_inert_layers() -> None:
    draft = _tensors(ensure_model("spm-deep-draft"))
    target = _tensors(ensure_model("spm-deep"))
    for name, values in draft.items():
        assert np.array_equal(target[name], values), name
    extra = sorted({n.split(".")[1] for n in target if n.startswith("blk.")} -
                   {n.split(".")[1] for n in draft if n.startswith("blk.")}, key=int)
    assert len(extra) == 22
    for layer in extra:
        for kind in ("attn_output", "ffn_down"):
            assert not target[f"blk.{layer}.{kind}.weight"].any(), (layer, kind)
        assert target[f"blk.{layer}.ffn_up.weight"].any()  # the rest is computed as usual


def test_greedy_outputs_of_draft_and_target_agree() -> None:
    draft, target = ensure_model("spm-deep-draft"), ensure_model("spm-deep")
    for prompt in PROMPTS:
        tokens = _greedy(target, prompt, N_PREDICT)
        assert len(set(tokens)) > 4, "a varied output, not one token repeated"
        assert _greedy(draft, prompt, N_PREDICT) == tokens


def test_speculation_with_the_cheap_draft_keeps_the_output_and_its_drafts() -> None:
    target = ensure_model("spm-deep")
    greedy = SamplingParams(temperature=0.0)
    params = [CompletionParams(n_predict=N_PREDICT, sampling=greedy,
                               speculative=SpecParams(n_max=8, cap=8)) for _ in PROMPTS]
    outputs = []
    for draft in ("", "spm-deep-draft"):
        server = _serve(target, 2, draft)
        try:
            outputs.append(_run(server.engine, params, PROMPTS))
        finally:
            server.close()
    plain, speculative = outputs
    for p, s in zip(plain, speculative, strict=True):
        assert s.tokens == p.tokens
    drafted = sum(s.timings.draft_n for s in speculative)
    accepted = sum(s.timings.draft_n_accepted for s in speculative)
    assert drafted > 0
    # Batched verification may round a near tie differently from the draft's one-token
    # decodes; a rare rejection is allowed, a disagreeing draft's rate is not.
    assert accepted >= 0.9 * drafted
