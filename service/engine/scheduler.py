"""The scheduler: which sequences get which tokens in the next `llama_decode`. Pure logic.

It sees requests only as token counts (computed, wanted), a slot and a KV reservation, and the
limits of the context; it never touches the model, gRPC or the event loop (a test checks its
imports), so it is tested as a plain data structure (tests/test_scheduler.py).

One call to `schedule()` returns a `Plan` for one decode:
1. cancelled requests leave (queued ones never took a slot; running ones free theirs);
2. waiting requests are admitted in order (priority, then arrival) while a slot is free and
   their KV reservation fits — the head of the queue is never overtaken for lack of cells;
3. every generating sequence gets its next token (decode tokens first, so a long prompt never
   starves them), then prompts get chunks, oldest first, within `n_batch`.

KV reservation: a request reserves its prompt plus its `n_predict` (capped at a slot's context,
which is all of it when `n_predict` is unlimited) when it is admitted. With one cache shared by
every slot (`kv_shared`), the reservations of running requests never exceed the cells, so an
admitted request never fails for lack of KV; idle slots' cached prompts are dropped, least
recently used first, when a newcomer needs their cells. With a cache per slot, every slot has
its own `n_ctx_seq` cells and a free slot is all a request needs.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import NamedTuple

from service.engine.cache_reuse import Shift, reuse_chunks
from service.engine.media import MediaSpan, span_at, text_run, whole_prefix
from service.engine.slots import Slot, choose_slot, common_prefix_len


@dataclass(frozen=True)
class Limits:
    n_batch: int  # tokens one decode takes
    n_ctx_seq: int  # positions one sequence (slot) may hold
    kv_cells: int  # cells of the whole cache
    kv_shared: bool  # one cache for every slot (--kv-unified), else one per slot
    slot_prompt_similarity: float = 0.5
    can_shift: bool = False  # the memory can move cells (cache reuse by KV shifting)


@dataclass(eq=False)
class SeqRequest:
    """One sequence the scheduler runs: a prompt, then generated tokens.

    The engine's Task extends it with what only execution needs (sampler, text stream...).
    """

    id: str
    prompt: Sequence[int]
    n_predict: int = -1  # resolved limit, -1 for none
    id_slot: int = -1  # the slot the client asked for, -1 for any
    cache_prompt: bool = True
    n_cache_reuse: int = 0  # shortest cached run reused by KV shifting; 0: off
    priority: int = 0  # lower runs sooner
    adapters: tuple[tuple[int, float], ...] = ()  # LoRA set: only equal sets share a decode
    cancelled: bool = False  # set by any thread; acted on at the next schedule()
    # An embedding input (service/embeddings.py): its prompt's outputs are read, no token is
    # generated. Not splittable: the whole prompt goes into one decode (pooling over a model
    # without causal attention must see every token of a sequence in one ubatch).
    embedding: bool = False
    splittable: bool = True
    # Another choice of the same prompt (n > 1), admitted before this one: this one's prompt
    # cells are copied from it once it has decoded them, not decoded again (`_copied`).
    copy_of: SeqRequest | None = None
    # Media in the prompt (service/engine/media.py): each span's ids are placeholders, its
    # embeddings decoded in a step of their own (`Plan.media`), never split.
    media: tuple[MediaSpan, ...] = ()

    # State, written by the scheduler and the engine thread.
    order: int = -1  # arrival number (FIFO among equal priorities)
    slot: Slot | None = None
    reserved: int = 0  # KV cells held for this request while it runs
    n_past: int = 0  # tokens of this sequence in the KV cells
    n_cached: int = 0  # prompt tokens reused from the slot's cache
    generating: bool = False  # the prompt is decoded and a token has been sampled
    last_token: int = -1  # the sampled token the next decode feeds
    # Speculative decoding: tokens drafted to follow last_token, verified in the next decode
    # (1 + len(draft) tokens, logits on each; fewer when the batch has less room).
    draft: tuple[int, ...] = ()

    @property
    def n_prompt(self) -> int:
        return len(self.prompt)

    def reservation(self, n_ctx_seq: int) -> int:
        wanted = n_ctx_seq if self.n_predict < 0 else len(self.prompt) + self.n_predict
        return min(max(wanted, len(self.prompt)), n_ctx_seq)


class Admission(NamedTuple):
    request: SeqRequest
    slot: int
    n_reuse: int  # leading prompt tokens already in the slot's cells; the rest is dropped
    shifts: tuple[Shift, ...] = ()  # cached runs moved into place first (cache_reuse)


class Work(NamedTuple):
    """Tokens of one sequence in this decode (a NamedTuple: one per sequence per step, made
    on the per-token path, where a frozen dataclass costs several times more)."""

    request: SeqRequest
    seq_id: int
    pos: int  # position of tokens[0]
    tokens: Sequence[int]
    n_outputs: int  # trailing positions whose logits are read (0: a prompt chunk mid-way)


@dataclass(frozen=True)
class Plan:
    cancelled: tuple[SeqRequest, ...] = ()  # left this step (queued or running)
    cleared: tuple[int, ...] = ()  # slots whose cells are all dropped (cancelled, evicted)
    admitted: tuple[Admission, ...] = ()
    # (source, destination, end): positions [0, end) of the source sequence become the
    # destination's (its own cells dropped) before the decode: a prompt decoded once for
    # several choices (n > 1).
    copies: tuple[tuple[int, int, int], ...] = ()
    work: tuple[Work, ...] = ()  # one decode, in sequence-id order
    adapters: tuple[tuple[int, float], ...] = ()  # the LoRA set every request of `work` uses
    # Media to decode before `work` (a llama_batch holds ids or embeddings, not both): one
    # whole span per request, its `tokens` the span's placeholder ids.
    media: tuple[Work, ...] = ()

    @property
    def n_tokens(self) -> int:
        return sum(len(w.tokens) for w in self.work)


@dataclass(frozen=True)
class Load:
    n_processing: int
    n_waiting: int
    kv_cells_total: int
    kv_cells_used: int
    kv_cells_reserved: int
    slot_cells: tuple[tuple[int, bool, int], ...]  # (slot id, busy, cells)


@dataclass
class Scheduler:
    limits: Limits
    slots: list[Slot]
    waiting: list[SeqRequest] = field(default_factory=list)
    running: list[SeqRequest] = field(default_factory=list)
    _arrivals: int = 0
    _tick: int = 0  # schedule() calls: the slots' "last used" clock

    # -- requests in and out ------------------------------------------------------------------
    def never_fits(self, req: SeqRequest) -> str:
        """Why `req` could never run here ("" if it can): checked before it is queued."""
        n, cap = len(req.prompt), self.limits.n_ctx_seq
        if n == 0:
            return "the prompt is empty"
        if not req.splittable and n > self.limits.n_batch:
            return (f"input ({n} tokens) is too large to process: this model embeds an input "
                    f"in one physical batch, of {self.limits.n_batch} tokens; raise "
                    "--ubatch-size (--batch-size follows it)")
        if n >= cap:
            return (f"the request exceeds the available context size: the prompt has {n} "
                    f"tokens, a slot holds {cap}; shorten the prompt or raise --ctx-size")
        if not -1 <= req.id_slot < len(self.slots):
            return f"id_slot must be -1 or a slot id 0..{len(self.slots) - 1}"
        return ""

    def add(self, req: SeqRequest) -> None:
        req.order, self._arrivals = self._arrivals, self._arrivals + 1
        bisect.insort(self.waiting, req, key=_queue_key)

    def finish(self, req: SeqRequest) -> None:
        """`req` ended (its events are sent): its slot keeps the cached tokens for reuse."""
        if req in self.running:
            self.running.remove(req)
        slot = req.slot
        if slot is not None and slot.task is req:
            slot.task = None
            slot.last_used = self._tick
        req.reserved = 0

    def drop(self, req: SeqRequest) -> int:
        """`req` ended and its cells are to be dropped (failure, cancellation): the slot it
        held, or -1 (never admitted, or its slot has moved on to another request)."""
        slot = req.slot
        owned = slot is not None and slot.task is req
        self.finish(req)
        if req in self.waiting:
            self.waiting.remove(req)
        if slot is None or not owned:
            return -1
        slot.cache_tokens = []
        return slot.id

    # -- one step -----------------------------------------------------------------------------
    def schedule(self) -> Plan:
        self._tick += 1
        cancelled, cleared = self._reap()
        admitted, evicted = self._admit()
        copies: list[tuple[int, int, int]] = []
        media: list[Work] = []
        work, adapters = self._work(copies, media)
        return Plan(cancelled=tuple(cancelled), cleared=tuple(cleared + evicted),
                    admitted=tuple(admitted), copies=tuple(copies), work=tuple(work),
                    adapters=adapters, media=tuple(media))

    def advance(self, plan: Plan) -> None:
        """The plan's decode succeeded: its tokens are in the cells."""
        for w in plan.work:
            w.request.n_past += len(w.tokens)
            if w.request.slot is not None:
                w.request.slot.cache_tokens.extend(w.tokens)

    def advance_media(self, w: Work) -> None:
        """A medium's embeddings are in the cells (decoded apart from the plan's batch)."""
        w.request.n_past += len(w.tokens)
        if w.request.slot is not None:
            w.request.slot.cache_tokens.extend(w.tokens)

    def rollback(self, req: SeqRequest, n_past: int) -> None:
        """Speculation: `req`'s cells from n_past on are dropped (drafted tokens rejected)."""
        if req.slot is not None and req.n_past > n_past:
            del req.slot.cache_tokens[n_past:]
            req.n_past = n_past

    def reset_cache(self, req: SeqRequest) -> None:
        """The memory could not keep a prefix of `req`'s slot: it starts from nothing."""
        assert req.slot is not None
        req.slot.cache_tokens = []
        req.n_past = req.n_cached = 0

    def _reap(self) -> tuple[list[SeqRequest], list[int]]:
        gone = [r for r in self.waiting if r.cancelled]
        for r in gone:
            self.waiting.remove(r)
        cleared = []
        for r in [r for r in self.running if r.cancelled]:
            cleared.append(self.drop(r))
            gone.append(r)
        return gone, cleared

    def _admit(self) -> tuple[list[Admission], list[int]]:
        admitted: list[Admission] = []
        evicted: list[int] = []
        for req in list(self.waiting):
            if not any(s.idle for s in self.slots):
                break
            slot = choose_slot(self.slots, req.prompt, req.id_slot,
                               self.limits.slot_prompt_similarity)
            if slot is None:  # the slot it named is busy: it waits, others may go
                continue
            need = req.reservation(self.limits.n_ctx_seq)
            if self.limits.kv_shared:
                freed = self._make_room(need, keep=slot)
                if freed is None:
                    break  # FIFO: nobody overtakes the head for lack of cells
                evicted.extend(freed)
            self.waiting.remove(req)
            admitted.append(self._start(req, slot, need))
        return admitted, evicted

    def make_room(self, need: int, keep: Slot) -> list[int] | None:
        """Idle slots whose cached cells to drop so that `need` more cells fit besides the
        running requests' reservations (None if they cannot); their caches are forgotten
        here, the caller drops their cells. For slot restores; [] with a cache per slot."""
        return self._make_room(need, keep) if self.limits.kv_shared else []

    def _make_room(self, need: int, keep: Slot) -> list[int] | None:
        """Idle slots to drop so that `need` more cells fit (None if they cannot)."""
        reserved = sum(r.reserved for r in self.running)
        idle = sorted((s for s in self.slots if s.idle and s is not keep and s.cache_tokens),
                      key=lambda s: s.last_used)
        cached = sum(len(s.cache_tokens) for s in idle)
        if reserved + need > self.limits.kv_cells:
            return None
        dropped = []
        while reserved + need + cached > self.limits.kv_cells and idle:
            s = idle.pop(0)
            cached -= len(s.cache_tokens)
            s.cache_tokens = []
            dropped.append(s.id)
        return dropped

    def _start(self, req: SeqRequest, slot: Slot, reserved: int) -> Admission:
        n_reuse = 0
        if slot.adapters != req.adapters:  # cells computed with other adapters are stale
            slot.cache_tokens = []
            slot.adapters = req.adapters
        shifts: tuple[Shift, ...] = ()
        if req.cache_prompt:
            n_reuse = min(common_prefix_len(slot.cache_tokens, req.prompt), len(req.prompt) - 1)
            if req.media:  # a medium is reused whole or decoded again whole
                n_reuse = whole_prefix(req.media, n_reuse)
            if self.limits.can_shift:
                shifts, n_reuse = reuse_chunks(slot.cache_tokens, req.prompt, n_reuse,
                                               req.n_cache_reuse)
        if shifts:
            slot.cache_tokens[:] = req.prompt[:n_reuse]
        del slot.cache_tokens[n_reuse:]
        slot.task, req.slot, req.reserved = req, slot, reserved
        req.n_past = req.n_cached = n_reuse
        self.running.append(req)
        return Admission(req, slot.id, n_reuse, shifts)

    def _work(self, copies: list[tuple[int, int, int]], media: list[Work]
              ) -> tuple[list[Work], tuple[tuple[int, float], ...]]:
        if not self.running:
            return [], ()
        # The oldest request's LoRA set runs; other sets wait for a later decode.
        group = min(self.running, key=_ORDER).adapters
        budget = self.limits.n_batch
        work = []
        prompts = []
        # Drafts (speculative decoding) take what the batch has left once every generating
        # sequence has its one token: a draft never pushes another sequence's token out.
        spare = budget - sum(1 for r in self.running if r.generating and r.adapters == group)
        for r in self.running:  # decode tokens first: one per generating sequence
            if r.adapters != group:
                continue
            if not r.generating:
                prompts.append(r)
            elif budget > 0 and r.draft and spare > 0:
                tokens = (r.last_token, *r.draft[:spare])
                work.append(Work(r, _slot_id(r), r.n_past, tokens, len(tokens)))
                budget -= len(tokens)
                spare -= len(tokens) - 1
            elif budget > 0:
                work.append(Work(r, _slot_id(r), r.n_past, (r.last_token,), 1))
                budget -= 1
        prompts.sort(key=_queue_key)
        for r in prompts:
            if budget == 0:
                break
            if r.copy_of is not None and not self._copied(r, copies):
                continue  # its sibling has not decoded the prompt yet
            n = min(len(r.prompt) - r.n_past, budget)
            if n <= 0:
                continue
            if r.media:
                span = span_at(r.media, r.n_past)
                if span is not None:  # whole, in a decode of its own; it uses up the budget
                    # a prompt ending with this medium: its last embedding gives the output
                    outputs = 1 if span.end == len(r.prompt) else 0
                    media.append(Work(r, _slot_id(r), r.n_past,
                                      r.prompt[span.start:span.end], outputs))
                    budget -= min(budget, span.n_tokens)
                    continue
                n = text_run(r.media, r.n_past, n)
            done = r.n_past + n == len(r.prompt)
            if not (done or r.splittable or _run_to_medium(r, n)):
                break  # whole or not at all: it goes first into the next decode
            outputs = (n if r.embedding else 1) if done else 0
            work.append(Work(r, _slot_id(r), r.n_past, r.prompt[r.n_past:r.n_past + n],
                             outputs))
            budget -= n
        # llama.cpp splits a batch whose sequence ids do not increase into several decodes.
        work.sort(key=_SEQ_ID)
        return work, group

    def _copied(self, r: SeqRequest, copies: list[tuple[int, int, int]]) -> bool:
        """Whether `r` may go on with its prompt: its sibling's cells of all but the prompt's
        last token are planned to be copied (that token `r` decodes itself, for its own
        logits), or the sibling is gone and `r` decodes its prompt itself; False: wait."""
        src, end = r.copy_of, len(r.prompt) - 1
        if r.media:  # a prompt ending with a medium: `r` decodes that medium whole itself
            end = whole_prefix(r.media, end)
        assert src is not None and r.slot is not None
        if r.n_past >= end or src.slot is None or src.slot.task is not src or src.cancelled:
            r.copy_of = None
            return True
        if src.n_past < end:
            return False
        copies.append((src.slot.id, r.slot.id, end))
        r.slot.cache_tokens[:] = r.prompt[:end]
        r.n_past = r.n_cached = end
        r.copy_of = None
        return True

    # -- what it holds ------------------------------------------------------------------------
    def load(self) -> Load:
        cells = tuple((s.id, not s.idle, len(s.cache_tokens)) for s in self.slots)
        return Load(n_processing=len(self.running), n_waiting=len(self.waiting),
                    kv_cells_total=self.limits.kv_cells,
                    kv_cells_used=sum(c for _, _, c in cells),
                    kv_cells_reserved=sum(r.reserved for r in self.running),
                    slot_cells=cells)

    def pending(self) -> Iterable[SeqRequest]:
        return [*self.running, *self.waiting]


_SEQ_ID = attrgetter("seq_id")
_ORDER = attrgetter("order")


def _queue_key(req: SeqRequest) -> tuple[int, int]:
    return req.priority, req.order


def _run_to_medium(req: SeqRequest, n: int) -> bool:
    """Whether the `n` tokens from req.n_past are a whole text run ending at a medium: an
    unsplittable input (pooling mean, cls, none) with media is decoded a text run or a medium
    at a time, the last text run whole, which alone is pooled (the pinned llama-server's
    rule)."""
    return bool(req.media) and span_at(req.media, req.n_past + n) is not None


def _slot_id(req: SeqRequest) -> int:
    assert req.slot is not None
    return req.slot.id
