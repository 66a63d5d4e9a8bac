"""GET /slots (ListSlots): each slot as the spec's /slots element, from the engine's published
snapshot (service.engine.monitor), never from inside the engine's step.

As the pinned llama-server: a slot never used shows id, n_ctx, speculative and is_processing
(id_task -1, no params or next_token); one running shows its request's settings and progress;
one that finished keeps its last request's settings (and id_task) but, as llama-server resets
a slot's counts when it frees it, next_token's counts and the prompt counts are zero (n_remain
-1) and n_prompt_tokens is what its cells still hold. `id_task` is the request's arrival
number in the engine; `prompt` is the request's prompt as text (gRPC only: llama-server shows
it with LLAMA_SERVER_SLOTS_DEBUG alone).
"""

from __future__ import annotations

from typing import Any

from llama.v1 import server_pb2

from service.engine.monitor import EngineSnapshot, SlotState
from service.messages import request_settings
from service.runtime import Runtime
from service.tokens import prompt_text


def prompt_tokens(snap: EngineSnapshot) -> int:
    """Tokens the slots' prompts hold: what turning them into text costs."""
    return sum(len(s.task.prompt) for s in snap.slots if s.task is not None)


def slots_response(rt: Runtime, snap: EngineSnapshot) -> Any:
    return server_pb2.ListSlotsResponse(slots=[slot_info(rt, s) for s in snap.slots])


def slot_info(rt: Runtime, state: SlotState) -> Any:
    n_ctx = rt.engine.n_ctx_slot
    info = server_pb2.SlotInfo(id=state.id, id_task=-1, n_ctx=n_ctx,
                               speculative=rt.engine.speculator is not None,
                               is_processing=state.busy)
    task = state.task
    if task is None:
        return info  # never used: llama-server shows the four fields above only
    # The task may be running: each field below is one read of an int, a list's length or a
    # bytearray (atomic under the GIL); together they may be one token apart.
    info.id_task = task.order
    info.params.CopyFrom(request_settings(rt, task.params, task.params.streaming))
    info.prompt = prompt_text(rt.model.vocab, list(task.prompt))
    # llama-server's n_prompt_tokens is what the slot's cells hold (the prompt, then the
    # tokens generated), and a slot that finished keeps its last task but not its counts.
    info.n_prompt_tokens = state.n_cells
    if not state.busy:
        info.next_token.CopyFrom(server_pb2.NextTokenInfo(n_remain=-1))
        info.n_prompt_tokens_processed = info.n_prompt_tokens_cache = 0
        return info
    generated = len(task.generated)
    n_prompt, n_cached = len(task.prompt), task.n_cached
    stream = task.stream
    stopped = stream.stopped
    info.next_token.CopyFrom(server_pb2.NextTokenInfo(
        has_next_token=True, has_new_line=b"\n" in stream.data,
        n_remain=-1 if task.n_predict < 0 else max(task.n_predict - generated, 0),
        n_decoded=generated, stopping_word=stopped.word if stopped is not None else ""))
    info.n_prompt_tokens_processed = max(min(task.n_past, n_prompt) - n_cached, 0)
    info.n_prompt_tokens_cache = n_cached
    return info
