"""GET /slots (ListSlots): each slot as the spec's /slots element, from the engine's published
snapshot (service.engine.monitor), never from inside the engine's step.

A slot shows its running request, else the last one it ran (`is_processing` false), else the
server's defaults with `id_task` -1, as the spec's example. `id_task` is the request's arrival
number in the engine; `prompt` is the request's prompt as text.
"""

from __future__ import annotations

from typing import Any

from llama.v1 import server_pb2

from service.engine.monitor import EngineSnapshot, SlotState
from service.messages import default_settings, request_settings
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
        info.params.CopyFrom(default_settings(rt))
        info.next_token.CopyFrom(server_pb2.NextTokenInfo(
            has_next_token=True, n_remain=rt.defaults.n_predict))
        return info
    # The task may be running: each field below is one read of an int, a list's length or a
    # bytearray (atomic under the GIL); together they may be one token apart.
    generated = len(task.generated)
    n_prompt, n_cached = len(task.prompt), task.n_cached
    stream = task.stream
    stopped = stream.stopped
    info.id_task = task.order
    info.params.CopyFrom(request_settings(rt, task.params, task.params.streaming))
    info.prompt = prompt_text(rt.model.vocab, list(task.prompt))
    info.next_token.CopyFrom(server_pb2.NextTokenInfo(
        has_next_token=state.busy, has_new_line=b"\n" in stream.data,
        n_remain=-1 if task.n_predict < 0 else max(task.n_predict - generated, 0),
        n_decoded=generated, stopping_word=stopped.word if stopped is not None else ""))
    info.n_prompt_tokens = n_prompt
    info.n_prompt_tokens_processed = max(min(task.n_past, n_prompt) - n_cached, 0)
    info.n_prompt_tokens_cache = n_cached
    return info
