"""The draft model of speculative decoding: its own context, one sequence per slot, proposing
tokens for every drafting slot together (one llama_decode per drafted position).

The draft's cells of a slot follow the target's: before drafting, the slot's history (the
target's cells plus the last sampled token) is compared with what the draft holds, the draft
drops what differs (llama_memory_seq_rm) and decodes what it lacks. So rejected tokens, context
shifts and new requests on the slot need no bookkeeping of their own. Only the engine thread
calls it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from native import Batch, Context, LlamaError, Model, Vocab
from native.sampler import argmax_logit, top_logits
from service.engine.slots import common_prefix_len

_log = logging.getLogger(__name__)

# As llama.cpp's check: vocabularies may differ in size by this much, and token texts are
# compared from this id on (the first few are often special tokens named differently).
VOCAB_MAX_SIZE_DIFFERENCE = 128
VOCAB_CHECK_START_TOKEN_ID = 5


def incompatibility(target: Vocab, draft: Vocab) -> str:
    """Why `draft` cannot draft for `target` ("" if it can): llama.cpp's own test (vocabulary
    type, BOS/EOS use and ids, size, token texts), as a message for the start-up error."""
    if target.type != draft.type:
        return (f"the draft model's vocabulary type ({draft.type}) differs from the target's "
                f"({target.type})")
    for what, add_t, add_d, tok_t, tok_d in (
            ("BOS", target.add_bos, draft.add_bos, target.bos, draft.bos),
            ("EOS", target.add_eos, draft.add_eos, target.eos, draft.eos)):
        if add_t != add_d or (add_t and tok_t != tok_d):
            return (f"the draft model's {what} token differs from the target's (added: "
                    f"{add_d} vs {add_t}, id: {tok_d} vs {tok_t})")
    n_t, n_d = target.n_tokens, draft.n_tokens
    if abs(n_t - n_d) > VOCAB_MAX_SIZE_DIFFERENCE:
        return (f"the draft model's vocabulary has {n_d} tokens, the target's {n_t} (at most "
                f"{VOCAB_MAX_SIZE_DIFFERENCE} apart)")
    for i in range(VOCAB_CHECK_START_TOKEN_ID, min(n_t, n_d)):
        if target.text(i) != draft.text(i):
            return (f"token {i} differs: the target's is {target.text(i)!r}, the draft's "
                    f"{draft.text(i)!r}")
    return ""


def best_token(logits: memoryview[float], p_min: float) -> tuple[int, float]:
    """The draft's best next token (ties: the lower id) and its probability. With p_min 0 (the
    default) no probability is below it, and the softmax's exponentials over the vocabulary
    (measured: ~0.7 ms a drafted token of 128k, as much as the draft's own decode of tiny-bpe)
    are skipped: an argmax, with 1.0 for the probability."""
    if p_min <= 0.0:
        return argmax_logit(logits), 1.0
    ids, lse = top_logits(logits, 1)
    return ids[0], math.exp(float(logits[ids[0]]) - lse)


@dataclass
class DraftAsk:
    """One slot's request for a draft: its history (ending with the last sampled token), at
    most `k` tokens, none below `p_min` confidence."""

    seq: int
    history: Sequence[int]
    k: int
    p_min: float
    draft: list[int] = field(default_factory=list)
    _next: tuple[int, float] = (-1, 0.0)  # the draft's best next token and its probability


class DraftModel:
    """A loaded draft model and its context (owned: close() frees both)."""

    def __init__(self, model: Model, ctx: Context, n_vocab_target: int) -> None:
        self.model, self.ctx = model, ctx
        self.n_vocab_target = n_vocab_target
        self._batch = Batch(ctx.n_batch)
        self._cells: list[list[int]] = [[] for _ in range(ctx.n_seq_max)]

    @property
    def n_ctx_seq(self) -> int:
        return self.ctx.n_ctx_seq

    def close(self) -> None:
        self.ctx.close()
        self.model.close()

    def propose(self, asks: Sequence[DraftAsk]) -> None:
        """Fill each ask's `draft`. A decode that fails (the draft's cells are full) costs
        this step its drafts, not the requests: the draft's memory starts over."""
        asks = [a for a in asks if a.k > 0 and len(a.history) + a.k <= self.n_ctx_seq
                and 0 <= a.seq < len(self._cells)]
        if not asks:
            return
        try:
            self._catch_up(asks)
            self._draft(asks)
        except LlamaError as e:
            _log.warning("the draft model's decode failed (%s); its cells start over", e)
            self.ctx.memory_clear()
            self._cells = [[] for _ in self._cells]
            for a in asks:
                a.draft.clear()

    def _catch_up(self, asks: Sequence[DraftAsk]) -> None:
        """Bring each sequence's cells to its history, decoding what they lack in as few
        decodes as fit the batch; each ask's best next token read after its last chunk."""
        runs: list[tuple[DraftAsk, int]] = []  # (ask, position to decode from)
        for a in asks:
            have = self._cells[a.seq]
            keep = min(common_prefix_len(have, a.history), len(a.history) - 1)
            if keep < len(have):
                if not self.ctx.seq_rm(a.seq, keep, -1):
                    self.ctx.seq_rm(a.seq)
                    keep = 0
                del have[keep:]
            runs.append((a, keep))
        batch, done = self._batch, []
        batch.clear()
        for a, start in runs:
            pos = start
            end = len(a.history)
            while pos < end:
                n = min(end - pos, batch.free)
                last = batch.add_sequence(a.history[pos:pos + n], pos, a.seq, pos + n == end)
                self._cells[a.seq].extend(a.history[pos:pos + n])
                pos += n
                if pos == end:
                    done.append((a, last))
                if batch.free == 0:
                    self._decode(done)
                    done = []
        if batch.n_tokens:
            self._decode(done)

    def _decode(self, outputs: list[tuple[DraftAsk, int]]) -> None:
        self.ctx.decode(self._batch, synchronize=True)  # the GIL back once: interrupt.c
        self._batch.clear()
        for a, i in outputs:
            a._next = best_token(self.ctx.logits_ith(i), a.p_min)

    def _draft(self, asks: Sequence[DraftAsk]) -> None:
        """Greedy drafting, one position of every active ask per decode."""
        active = list(asks)
        while active:
            batch = self._batch
            batch.clear()
            outputs = []
            for a in active:
                tok, p = a._next
                if p < a.p_min or not 0 <= tok < self.n_vocab_target:
                    continue
                a.draft.append(tok)
                if len(a.draft) >= a.k:
                    continue  # its last token is never decoded by the draft: nothing needs it
                pos = len(a.history) + len(a.draft) - 1
                outputs.append((a, batch.add(tok, pos, a.seq, True)))
                self._cells[a.seq].append(tok)
            if not outputs:
                return
            self._decode(outputs)
            active = [a for a, _ in outputs]
