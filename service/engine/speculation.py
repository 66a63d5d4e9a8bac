"""Speculative decoding in the engine's step: drafts before the plan, verification after the
decode (docs/design.md, "Speculative decoding").

1. `Speculator.propose`: every generating request that may speculate gets a draft (n-gram
   lookup first, then the draft model), set on the request; the scheduler gives it 1 + k
   tokens with logits on each in the same decode as the other slots' tokens and prompt chunks.
2. `verify`: the target samples the first position with the request's own sampler chain, and
   the next while the token it sampled equals the draft's: each sample sees the target's
   logits after exactly the tokens kept, and the chain accepts each token as usual, so the
   output is the one the request would have had without speculation (greedy or seeded).
   Rejected cells are dropped; the tokens go one by one through the one stop decision, and a
   stop rolls back what followed it.

A grammar is verified the same way (as llama.cpp's common_sampler_sample_and_accept_n): it is
part of the chain, and the chain accepts each kept token before the next position is sampled,
so every position is sampled with the grammar advanced by the tokens before it; a lazy tool-call
grammar watches each token as it is sampled and may join the chain between two positions.
Probabilities (n_probs) are read at each position from the target's logits there, as the
executor reads them for a token sampled alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from native import Context, LlamaError
from native.errors import SamplerError
from native.sampler import NO_TOKEN
from service.engine.events import TokenProbs
from service.engine.executor import NO_TOKEN_SELECTED
from service.engine.sampling import top_probs
from service.engine.scheduler import Scheduler
from service.engine.speculative import NgramSettings, draft_room, ngram_draft, why_not
from service.engine.speculative_draft import DraftAsk, DraftModel
from service.engine.task import Task


@dataclass
class SpecStats:
    """Counters for /metrics and GetMetrics (llama-server's spec_decode_*_total)."""

    draft_tokens: int = 0  # tokens proposed and verified
    accepted_tokens: int = 0
    verifications: int = 0  # speculative steps (drafts verified)
    accepted_per_pos: list[int] = field(default_factory=list)


class Speculator:
    """What a server speculates with: n-gram lookup, a draft model, or both (n-gram first)."""

    def __init__(self, n_ctx_seq: int, draft: DraftModel | None = None,
                 ngram: NgramSettings | None = None) -> None:
        self.n_ctx_seq = n_ctx_seq
        self.draft = draft
        self.ngram = ngram
        self.stats = SpecStats()

    def close(self) -> None:
        if self.draft is not None:
            self.draft.close()

    def propose(self, running: Sequence[Task]) -> None:
        """Set `draft` on every generating request that may speculate this step."""
        asks: list[tuple[Task, DraftAsk]] = []
        for task in running:
            task.draft = ()
            if not task.generating or task.slot is None or why_not(task):
                continue
            spec = task.params.speculative
            history = [*task.slot.cache_tokens, task.last_token]
            if self.ngram is not None:
                cap = self.ngram.size_m if spec.cap is None else spec.cap
                found = ngram_draft(history, self.ngram, draft_room(task, self.n_ctx_seq, cap))
                if found:
                    self._set(task, found)
                    continue
            if self.draft is not None:
                k = draft_room(task, min(self.n_ctx_seq, self.draft.n_ctx_seq), spec.n_max)
                if k > 0:
                    asks.append((task, DraftAsk(task.slot.id, history, k, spec.p_min)))
        if asks:
            assert self.draft is not None
            self.draft.propose([a for _, a in asks])
            for task, ask in asks:
                self._set(task, ask.draft)

    @staticmethod
    def _set(task: Task, draft: Sequence[int]) -> None:
        if len(draft) >= max(task.params.speculative.n_min, 1):
            task.draft = tuple(draft)

    def count(self, n_draft: int, n_accepted: int) -> None:
        s = self.stats
        s.draft_tokens += n_draft
        s.accepted_tokens += n_accepted
        s.verifications += 1
        if len(s.accepted_per_pos) < n_draft:
            s.accepted_per_pos.extend([0] * (n_draft - len(s.accepted_per_pos)))
        for i in range(n_accepted):
            s.accepted_per_pos[i] += 1


Kept = tuple[int, TokenProbs | None]  # a kept token, with its probabilities if asked


def sample_verified(ctx: Context, task: Task, draft: Sequence[int]) -> list[Kept] | str:
    """The tokens a verification keeps: the target's sample at each position while it equals
    the draft's token there, then the one that differs (or follows the whole draft); or why
    sampling failed."""
    chain = task.chain
    assert chain is not None
    n_probs, lazy = task.params.n_probs, task.lazy
    out: list[Kept] = []
    for i in range(len(draft) + 1):
        try:
            kept = (_sample_with_probs(ctx, task, task.out_index + i) if n_probs
                    else (chain.sample(ctx, task.out_index + i), None))
        except SamplerError:
            return NO_TOKEN_SELECTED
        except LlamaError as e:
            return str(e)
        if kept[0] == NO_TOKEN:
            return NO_TOKEN_SELECTED
        if lazy is not None:
            lazy.accept(chain, kept[0])  # a tool call may start here: the grammar joins
        out.append(kept)
        if i == len(draft) or kept[0] != draft[i]:
            break
    return out


def _sample_with_probs(ctx: Context, task: Task, idx: int) -> Kept:
    """The token at batch output `idx` with its probabilities, as the executor gives them for
    a token sampled alone: after sampling (post_sampling_probs) or the model's own."""
    chain, n_probs = task.chain, task.params.n_probs
    assert chain is not None
    if task.params.post_sampling_probs:
        token, top = chain.sample_with_probs(ctx, idx, n_probs)
        value = next((p for t, p in top if t == token), 0.0)
        return token, TokenProbs(token, value, tuple(top), True)
    logits = ctx.logits_ith(idx)
    top_list, lse = top_probs(logits, n_probs)
    token = chain.sample(ctx, idx)
    value = float(logits[token]) - lse
    return token, TokenProbs(token, value, tuple((t.id, t.p) for t in top_list), False)


def rollback(ctx: Context, scheduler: Scheduler, task: Task, n_past: int) -> None:
    """Drop the task's cells from position n_past on (tokens the step did not keep)."""
    if task.n_past > n_past and task.slot is not None:
        ctx.seq_rm(task.slot.id, n_past, -1)
        scheduler.rollback(task, n_past)


def verify(ctx: Context, scheduler: Scheduler, speculator: Speculator, task: Task,
           emit: Callable[[Task, int], None]) -> str | None:
    """Verify `task`'s draft after the decode and hand each kept token to `emit` (the
    engine's per-token update) until one ends the request; why sampling failed, or None."""
    draft = task.verify
    task.verify = ()
    n_past0 = task.n_past - len(draft) - 1  # before this step's decode
    tokens = sample_verified(ctx, task, draft)
    if isinstance(tokens, str):
        return tokens
    n_accepted = len(tokens) - 1
    rollback(ctx, scheduler, task, n_past0 + 1 + n_accepted)
    speculator.count(len(draft), n_accepted)
    task.draft_n += len(draft)
    task.draft_n_accepted += n_accepted
    for j, (token, probs) in enumerate(tokens):
        if probs is not None:  # recorded as update.accept records a token's probabilities
            task.pending_probs.append(probs)
        emit(task, token)
        if task.ended:
            # As without speculation: the cells hold what preceded the stopping token.
            rollback(ctx, scheduler, task, n_past0 + 1 + j)
            break
    return None
