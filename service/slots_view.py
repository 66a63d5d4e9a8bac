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

from collections.abc import Sequence
from typing import Any

from llama.v1 import server_pb2

from service.engine.monitor import SlotState
from service.messages import request_settings
from service.runtime import Runtime
from service.tokens import prompt_text


class SlotsView:
    """One per runtime: the /slots answer, with each task's unchanging part (its id, settings
    and prompt as text: most of a slot's fields, and most of the work) made once per task, not
    once per scrape; a scrape adds what moves (is_processing and the counts).

    Holds one entry a slot (its latest task's), as the monitor holds the task itself. Read from
    the event loop and the offload threads: an entry is one dict item, replaced whole."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._made: dict[int, tuple[Any, Any]] = {}  # slot id -> (task, its SlotInfo part)

    def text_tokens(self, states: Sequence[SlotState]) -> int:
        """Tokens of the prompts still to turn into text: what the next answer costs."""
        return sum(len(s.task.prompt) for s in states if s.task is not None and not self._has(s))

    def response(self, states: Sequence[SlotState]) -> Any:
        """The answer for `states` (a snapshot's `slots`), each slot written in place in the
        response (a SlotInfo made apart would be copied into it once more)."""
        resp = server_pb2.ListSlotsResponse()
        for state in states:
            self._slot(state, resp.slots.add())
        return resp

    def _has(self, state: SlotState) -> bool:
        made = self._made.get(state.id)
        return made is not None and made[0] is state.task

    def _slot(self, state: SlotState, info: Any) -> None:
        task = state.task
        if task is None:  # never used: llama-server shows these four fields only
            info.id, info.id_task, info.n_ctx = state.id, -1, self.rt.engine.n_ctx_slot
            info.speculative = self.rt.engine.speculator is not None
            info.is_processing = state.busy
            return
        made = self._made.get(state.id)
        if made is None or made[0] is not task:
            made = self._made[state.id] = (task, _task_part(self.rt, state.id, task))
        info.CopyFrom(made[1])
        _add_counts(info, state)


def _task_part(rt: Runtime, slot_id: int, task: Any) -> Any:
    """What a slot shows of its task that the task keeps for its life."""
    info = server_pb2.SlotInfo(id=slot_id, id_task=task.order, n_ctx=rt.engine.n_ctx_slot,
                               speculative=rt.engine.speculator is not None)
    info.params.CopyFrom(request_settings(rt, task.params, task.params.streaming))
    info.prompt = prompt_text(rt.model.vocab, list(task.prompt))
    return info


def _add_counts(info: Any, state: SlotState) -> None:
    task = state.task
    info.is_processing = state.busy
    # The task may be running: each field below is one read of an int, a list's length or a
    # bytearray (atomic under the GIL); together they may be one token apart.
    # llama-server's n_prompt_tokens is what the slot's cells hold (the prompt, then the
    # tokens generated), and a slot that finished keeps its last task but not its counts.
    info.n_prompt_tokens = state.n_cells
    if not state.busy:
        info.next_token.n_remain = -1
        info.n_prompt_tokens_processed = info.n_prompt_tokens_cache = 0
        return
    generated = len(task.generated)
    n_prompt, n_cached = len(task.prompt), task.n_cached
    stream = task.stream
    stopped = stream.stopped
    nt = info.next_token
    nt.has_next_token, nt.has_new_line = True, b"\n" in stream.data
    nt.n_remain = -1 if task.n_predict < 0 else max(task.n_predict - generated, 0)
    nt.n_decoded = generated
    nt.stopping_word = stopped.word if stopped is not None else ""
    info.n_prompt_tokens_processed = max(min(task.n_past, n_prompt) - n_cached, 0)
    info.n_prompt_tokens_cache = n_cached
