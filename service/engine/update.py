"""Update: a sampled token becomes text for the request's stream, and the one place that decides
whether a generation stops (end of generation, stop word or indentation, n_predict,
t_max_predict_ms, the slot's context). Pure logic over the task's state, no native calls: the
vocabulary's pieces come in as bytes."""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass

from service.engine.events import TokenProbs
from service.engine.task import Task


@dataclass(frozen=True)
class StopRules:
    eog: Collection[int]  # end-of-generation tokens
    n_ctx_seq: int  # positions a slot holds
    can_shift: bool  # --context-shift on, and the memory can shift positions
    add_bos: bool  # the model's prompts start with BOS (kept by a context shift)


def accept(task: Task, token: int, probs: TokenProbs | None) -> None:
    """Record a sampled token on the task; it is fed to the next decode."""
    task.generated.append(token)
    task.last_token = token
    task.pending_tokens.append(token)
    if probs is not None:
        task.pending_probs.append(probs)
    if not task.generating:
        task.generating = True
        task.t_first = time.perf_counter()


def stop_reason(task: Task, token: int, rules: StopRules) -> str | None:
    """Why the generation stops after `token` ("eos", "word", "limit"), or None.

    Call after the token's piece went into task.stream (an end-of-generation token's piece
    does not). A generation whose slot is full stops here unless its context can shift
    (shift_span), and is then marked truncated.
    """
    if token in rules.eog and not task.params.ignore_eos:
        return "eos"
    stopped = task.stream.stopped
    if stopped is not None:
        return stopped.stop_type
    if 0 <= task.n_predict <= len(task.generated):
        return "limit"
    tmax = task.params.t_max_predict_ms
    if tmax and (time.perf_counter() - task.t_first) * 1e3 > tmax and "\n" in task.stream.text:
        return "limit"
    if slot_full(task, rules) and shift_span(task, rules) is None:
        task.truncated = True
        return "limit"
    return None


def slot_full(task: Task, rules: StopRules) -> bool:
    """Whether the slot has no room for the next token: as llama-server, one cell is kept free
    (it stops or shifts at n_past + 1 >= n_ctx), so both servers stop at the same token."""
    return task.n_past + 1 >= rules.n_ctx_seq


def shift_span(task: Task, rules: StopRules) -> tuple[int, int] | None:
    """For a full slot: (n_keep, n_discard) of llama-server's context shift, or None when the
    context cannot shift (off, unsupported, or nothing left to discard). n_discard is the
    request's when it gives one (at most all but one of the tokens after n_keep), else half."""
    if not rules.can_shift:
        return None
    n_keep = task.n_prompt if task.params.n_keep < 0 else task.params.n_keep
    n_keep = min(n_keep + (1 if rules.add_bos else 0), task.n_past - 2)
    n_left = task.n_past - n_keep
    # The request's n_discard (validated >= 0), else half; never all that follows n_keep.
    n_discard = min(task.params.n_discard or n_left // 2, max(n_left - 1, 0))
    if n_keep < 0 or n_discard <= 0:
        return None
    return n_keep, n_discard
