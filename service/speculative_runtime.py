"""Loading what speculative decoding needs at start-up (`-md`, `--spec-type ngram-simple`): the
draft model and its context, checked against the target; a draft that cannot serve refuses
start-up with a message saying why."""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from native import Context, ContextParams, Model, ModelParams
from native.errors import InvalidInputError
from service.config_speculative import SpeculativeConfig
from service.engine.speculation import Speculator
from service.engine.speculative import NgramSettings, SpecParams
from service.engine.speculative_draft import DraftModel, incompatibility

_log = logging.getLogger(__name__)


class DraftRefusedError(InvalidInputError):
    """The draft model (or this target) cannot serve speculative decoding."""


def spec_defaults(c: SpeculativeConfig) -> SpecParams:
    """Every request's draft settings unless it sets its own `speculative.*`."""
    return SpecParams(n_max=c.n_max, n_min=min(c.n_min, c.n_max), p_min=c.p_min, types=c.types)


def load_speculator(c: SpeculativeConfig, model: Model, ctx: Context,
                    model_params: ModelParams) -> Speculator | None:
    """The engine's Speculator, or None when speculation is off. Raises DraftRefusedError."""
    if not c.enabled:
        return None
    # A memory that cannot drop a sequence's last cells (recurrent models) cannot take back
    # rejected draft tokens; probed on the still-empty context.
    if ctx.has_memory and not ctx.seq_rm(0, 1, -1):
        raise DraftRefusedError("speculative decoding needs a memory that can drop rejected "
                                "tokens; this model's (recurrent) cannot")
    draft = _load_draft(c, model, ctx, model_params) if c.model_draft else None
    ngram = NgramSettings(c.ngram_size_n, c.ngram_size_m) if c.ngram else None
    return Speculator(ctx.n_ctx_seq, draft, ngram)


def _load_draft(c: SpeculativeConfig, model: Model, ctx: Context,
                model_params: ModelParams) -> DraftModel:
    assert c.model_draft is not None
    path = Path(c.model_draft)
    layers = c.n_gpu_layers_draft if c.n_gpu_layers_draft >= 0 else -1
    with ExitStack() as cleanup:
        draft = Model(path, replace(model_params, n_gpu_layers=layers))
        cleanup.callback(draft.close)
        why = incompatibility(model.vocab, draft.vocab)
        if why:
            raise DraftRefusedError(f"the draft model {path.name} cannot draft for the target "
                                    f"model: {why} (their vocabularies must match)")
        p = ctx.params
        dctx = Context(draft, ContextParams(
            n_ctx=c.ctx_size_draft or ctx.n_ctx, n_batch=ctx.n_batch, n_ubatch=ctx.n_ubatch,
            n_seq_max=ctx.n_seq_max, n_threads=p.n_threads, n_threads_batch=p.n_threads_batch,
            flash_attn=p.flash_attn, kv_unified=p.kv_unified, offload_kqv=p.offload_kqv,
            no_perf=True))
        cleanup.pop_all()
    _log.info("draft model loaded: %s (%s), %d tokens a slot", path.name, draft.description(),
              dctx.n_ctx_seq)
    return DraftModel(draft, dctx, model.vocab.n_tokens)
