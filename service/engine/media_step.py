"""A plan's media (Plan.media) decoded into their slots' sequences, before the plan's token
batch: a llama_batch carries token ids or embeddings, not both. Runs on the engine thread;
a text-only step never comes here."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from native import Context, LlamaError
from service.engine.media import span_at
from service.engine.scheduler import Scheduler, Work

_log = logging.getLogger(__name__)

Fail = Callable[[Work, str], None]


def decode_media(ctx: Context, scheduler: Scheduler, works: Sequence[Work], fail: Fail) -> None:
    """Decode each medium whole (its embeddings were encoded when the request was built);
    a failure fails its request only, its partial cells dropped."""
    # Here, not with the module: native.mtmd_decode loads numpy, which a server without a
    # projector never loads (service/runtime.py says why).
    from native.mtmd_decode import decode_embeddings

    for w in works:
        span = span_at(w.request.media, w.pos)
        assert span is not None and span.n_tokens == len(w.tokens)
        try:
            decode_embeddings(ctx, span.embd, w.pos, w.seq_id, non_causal=span.non_causal)
        except LlamaError as e:
            _log.error("decoding a medium failed: %s", e)
            ctx.seq_rm(w.seq_id, w.pos, -1)
            fail(w, f"decoding the {span.kind} failed: {e}")
            continue
        scheduler.advance_media(w)
