"""A plan's media (Plan.media) decoded into their slots' sequences, before the plan's token
batch: a llama_batch carries token ids or embeddings, not both. Runs on the engine thread;
a text-only step never comes here."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from native import Context, LlamaError
from service.engine.media import span_at
from service.engine.scheduler import Scheduler, Work
from service.engine.task import Task

_log = logging.getLogger(__name__)

Fail = Callable[[Work, str], None]


def decode_media(ctx: Context, scheduler: Scheduler, works: Sequence[Work], fail: Fail
                 ) -> list[Task]:
    """Decode each medium whole (its embeddings were encoded when the request was built);
    a failure fails its request only, its partial cells dropped. Returns the tasks whose prompt
    ended with their medium, `out_index` set to its last embedding's output: they are to be
    sampled (or read) before the next decode overwrites that output."""
    # Here, not with the module: native.mtmd_decode loads numpy, which a server without a
    # projector never loads (service/runtime.py says why).
    from native.mtmd_decode import decode_embeddings

    ready: list[Task] = []
    for w in works:
        span = span_at(w.request.media, w.pos)
        assert span is not None and span.n_tokens == len(w.tokens)
        try:
            decode_embeddings(ctx, span.embd, w.pos, w.seq_id, non_causal=span.non_causal,
                              logits_last=w.n_outputs > 0)
        except LlamaError as e:
            _log.error("decoding a medium failed: %s", e)
            ctx.seq_rm(w.seq_id, w.pos, -1)
            fail(w, f"decoding the {span.kind} failed: {e}")
            continue
        scheduler.advance_media(w)
        if w.n_outputs:
            task = w.request
            assert isinstance(task, Task)
            # decode_embeddings decodes n_batch embeddings at a time: the last slice's last
            task.out_index = (span.n_tokens - 1) % ctx.n_batch
            ready.append(task)
    return ready
