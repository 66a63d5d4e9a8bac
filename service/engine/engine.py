"""The engine: one thread owns the llama context and runs the continuous-batching loop.

Each step builds one batch from every active slot — one token per generating slot, then prompt
chunks of newly admitted requests up to n_batch — decodes it once, samples every slot that has
logits together on the sampling threads, and hands each request its events (one hand-off per
request per step). Requests beyond the free slots wait in a queue. Native calls never run on
the asyncio event loop.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from native import Batch, Context, LlamaError, Model, SamplerChain, SamplerError
from native.errors import DecodeAbortedError, NoKvSlotError
from native.sampler import NO_TOKEN, sample_parallel
from service.engine.events import Chunk, Event, Failed, Finished, Started, TokenProbs
from service.engine.params import ParamError
from service.engine.sampling import build_chain, dry_on, penalties_on, top_probs
from service.engine.slots import Slot, choose_slot, common_prefix_len
from service.engine.task import EventSink, LoopSink, Task
from service.engine.textstream import TextStream

_log = logging.getLogger(__name__)
T = TypeVar("T")
# How long an engine in a burst (BURST_WINDOW_S) waits, at most, at one look for requests the
# service has begun reading (Arrival) before it decodes. Reading one takes 0.2-1 ms; a request
# that is slower (a long text to tokenize) joins a later step instead.
ARRIVAL_WAIT_S = 0.003
# For this long after an idle engine takes a request, and while no request of that burst has a
# token yet, a request that begins arriving interrupts the prompt decode under way (where
# llama.cpp computes on the CPU) so that it joins a redone one: the burst's own requests reach the
# engine over several milliseconds, and one that misses the first step would wait for all of it.
# Bounds the work thrown away per burst; llama.cpp drops what an interrupted decode computed.
BURST_WINDOW_S = 0.015


class Arrival:
    """A request the service has begun reading: open from the RPC's start until the engine
    takes the request's (last) task from its inbox, or until the request ends without one.

    An engine that has just left idle waits for the open arrivals, up to ARRIVAL_WAIT_S, before
    it decodes, and an arrival that opens during that first prompt decode interrupts it (see
    BURST_WINDOW_S): requests sent together reach the engine 0.2-0.7 ms apart (one event loop
    reads their RPCs in turn), and so they are prefilled in one step rather than the later ones
    waiting for the first ones' prompts. A lone request has no other open arrival and is not
    delayed.
    """

    __slots__ = ("_engine",)

    def __init__(self, engine: Engine | None) -> None:
        self._engine = engine
        if engine is not None:
            with engine._arrivals_lock:
                engine._arriving += 1
            # After counting, so that an engine about to decode either sees this arrival or has
            # already allowed its decode to be interrupted (Engine._step).
            if time.monotonic() < engine._burst_until:
                engine.ctx.interrupt()

    def close(self) -> bool:
        """Stop counting this arrival (the engine has its task, or there is none); whether it
        was still open. Safe from any thread, any number of times."""
        engine = self._engine
        if engine is None:
            return False
        with engine._arrivals_lock:
            if self._engine is None:
                return False
            self._engine = None
            engine._arriving -= 1
        return True

    def __enter__(self) -> Arrival:
        return self

    def __exit__(self, *exc: object) -> None:
        engine = self._engine
        if engine is not None and self.close():  # ended with no task: wake a waiting engine
            engine._inbox.put(None)


@dataclass(frozen=True)
class EngineSettings:
    context_shift: bool = True
    slot_prompt_similarity: float = 0.5
    n_predict_default: int = -1  # server-wide cap (-n); a request's n_predict applies within it
    special: bool = False  # render special (control) tokens in the text, as --special asks
    sampling_threads: int = 1  # threads that sample a step's slots together (--threads-sampling)


@dataclass
class EngineStats:
    """Counters for /metrics and /slots; written by the engine thread only."""

    prompt_tokens_total: int = 0
    prompt_seconds_total: float = 0.0
    tokens_predicted_total: int = 0
    tokens_predicted_seconds_total: float = 0.0
    n_decode_total: int = 0
    n_busy_slots_total: int = 0
    requests_processing: int = 0
    requests_deferred: int = 0
    decodes_interrupted: int = 0  # redone with the requests of a burst that came meanwhile


class Engine:
    def __init__(self, model: Model, ctx: Context, settings: EngineSettings | None = None) -> None:
        self.model, self.ctx, self.vocab = model, ctx, model.vocab
        self.settings = settings or EngineSettings()
        self.slots = [Slot(i) for i in range(ctx.n_seq_max)]
        self.n_ctx_slot = ctx.n_ctx_seq
        self.stats = EngineStats()
        self.eog = self.vocab.eog_tokens()
        self._batch = Batch(ctx.n_batch)
        self._inbox: queue.SimpleQueue[Task | Callable[[], None] | None] = queue.SimpleQueue()
        self._waiting: deque[Task] = deque()
        self._active: list[Task] = []
        self._by_id: dict[str, Task] = {}
        self._outbox: dict[EventSink, list[Event]] = {}
        self._stopping = False
        self._arriving = 0  # open Arrivals
        self._arrivals_lock = threading.Lock()
        self._burst_until = 0.0  # time.monotonic(): end of BURST_WINDOW_S for this burst
        self._thread = threading.Thread(target=self._run, name="llama-engine", daemon=True)

    # -- API for other threads --------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        self._inbox.put(None)
        self._thread.join(timeout)

    def submit(self, task: Task, arrival: Arrival | None = None) -> None:
        """Queue a generation; its events go to task.sink. Never blocks. `arrival`, the
        request's, closes when the engine takes this task (give it with a request's last)."""
        task.arrival = arrival
        self._inbox.put(task)

    def cancel(self, task_id: str) -> bool:
        """Stop a queued or running generation; it leaves the batch at the next step."""
        task = self._by_id.get(task_id)
        if task is None:
            return False
        task.cancelled = True
        self._inbox.put(None)  # wake the loop if idle
        return True

    def call(self, fn: Callable[[], T]) -> Future[T]:
        """Run fn on the engine thread between two steps (for slot save/restore, embeddings...)."""
        fut: Future[T] = Future()

        def job() -> None:
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn())
                except BaseException as e:  # handed to the caller, not raised here
                    fut.set_exception(e)

        self._inbox.put(job)
        return fut

    @property
    def n_waiting(self) -> int:
        return len(self._waiting)

    @property
    def n_arriving(self) -> int:
        """Open Arrivals: requests being read that the engine has no task of yet."""
        return self._arriving

    # -- the loop ---------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stopping:
            try:
                idle = not self._active and not self._waiting
                self._intake(block=idle)
                if idle:
                    self._burst_until = time.monotonic() + BURST_WINDOW_S
                self._gather(wait_for_arrivals=self._in_burst())
                if self._active:
                    self._step()
            except Exception:  # a bug must not kill the loop: fail what is running, go on
                _log.exception("engine step failed")
                for task in list(self._active):
                    self._fail(task, "internal", "internal error in the engine step")
            finally:
                self._deliver()
        for task in [*self._active, *self._waiting]:
            self._fail(task, "unavailable", "server is shutting down")
        self._deliver()

    def _in_burst(self) -> bool:
        """Within BURST_WINDOW_S of leaving idle, with no request generating yet: requests
        that begin arriving are worth waiting for, and worth redoing a prompt decode for."""
        return (time.monotonic() < self._burst_until
                and not any(t.generating for t in self._active))

    def _has_free_slot(self) -> bool:
        return any(s.task is None for s in self.slots)

    def _gather(self, wait_for_arrivals: bool) -> None:
        """Admit into this step the requests that came in meanwhile: requests sent together
        reach the engine a few tenths of a millisecond apart, and a burst sent to an idle
        server is prefilled together (docs/benchmarks.md, item 8). In a burst, also wait (up to
        ARRIVAL_WAIT_S) for open Arrivals. At most one look per slot, and none
        once the slots are full."""
        deadline = time.monotonic() + ARRIVAL_WAIT_S
        for _ in self.slots:
            if not self._has_free_slot():
                return
            if not self._inbox.empty():
                self._intake(block=False)
                continue
            timeout = deadline - time.monotonic()
            if not (wait_for_arrivals and self._arriving > 0 and timeout > 0):
                return
            self._intake(block=True, timeout=timeout)

    def _intake(self, block: bool, timeout: float | None = None) -> None:
        """Take what the inbox holds (waiting for it if `block`, up to `timeout`), admit what
        fits, and send the admitted requests their Started events."""
        self._drain_inbox(block, timeout)
        self._reap_cancelled()
        self._admit()
        if self._outbox:
            # Started events now, not with the first token after the prompt's decode: the
            # consumer (a gRPC stream, the REST bridge setting up its SSE response) does its
            # per-request work while the prompt is decoded.
            self._deliver()

    def _drain_inbox(self, block: bool, timeout: float | None = None) -> None:
        while True:
            try:
                item = self._inbox.get(block=block, timeout=timeout)
            except queue.Empty:
                return
            block = False
            if item is None:
                continue
            if isinstance(item, Task):
                if item.arrival is not None:
                    item.arrival.close()
                self._by_id[item.id] = item
                self._waiting.append(item)
            else:
                item()

    def _reap_cancelled(self) -> None:
        for task in [t for t in self._waiting if t.cancelled]:
            self._waiting.remove(task)
            self._fail(task, "cancelled", "generation cancelled")
        for task in [t for t in self._active if t.cancelled]:
            slot = task.slot
            self._fail(task, "cancelled", "generation cancelled")
            if slot is not None:  # free the KV cells at once
                self.ctx.seq_rm(slot.id)
                slot.cache_tokens = []

    def _admit(self) -> None:
        still_waiting: deque[Task] = deque()
        while self._waiting:
            task = self._waiting.popleft()
            slot = choose_slot(self.slots, task.prompt, task.params.id_slot,
                               self.settings.slot_prompt_similarity)
            if slot is None:
                still_waiting.append(task)
                continue
            self._start(task, slot)
        self._waiting = still_waiting
        self.stats.requests_deferred = len(self._waiting)

    def _start(self, task: Task, slot: Slot) -> None:
        if not task.prompt:
            self._fail(task, "invalid_argument", "empty prompt")
            return
        if len(task.prompt) >= self.n_ctx_slot:
            self._fail(task, "invalid_argument",
                       f"the prompt has {len(task.prompt)} tokens, more than the "
                       f"{self.n_ctx_slot - 1} that fit in a slot's context; shorten it or raise "
                       "--ctx-size")
            return
        try:
            task.chain = build_chain(self.vocab, task.params.sampling,
                                     self.eog if task.params.ignore_eos else (), self.n_ctx_slot)
        except (SamplerError, ParamError, LlamaError) as e:
            self._fail(task, "invalid_argument", str(e))
            return
        n_common = 0
        if task.params.cache_prompt:
            n_common = min(common_prefix_len(slot.cache_tokens, task.prompt), len(task.prompt) - 1)
        if not self.ctx.seq_rm(slot.id, n_common, -1):
            self.ctx.seq_rm(slot.id)  # this memory cannot drop a suffix: start over
            n_common = 0
        slot.cache_tokens = task.prompt[:n_common]
        slot.task, task.slot = task, slot
        task.n_past = task.n_cached = n_common
        task.stream = TextStream(task.params.stop, task.params.n_indent)
        task.t_start = time.perf_counter()
        self._prime_penalties(task)
        self._active.append(task)
        self.stats.requests_processing = len(self._active)
        self._emit(task, Started(task.id, slot.id, len(task.prompt), n_common))

    def _prime_penalties(self, task: Task) -> None:
        # Repetition penalties see the prompt too, as in llama-server (not with a grammar,
        # whose state must start at the first generated token). Only the penalty and DRY
        # samplers keep a history; when both are off, feeding them the prompt (up to a whole
        # context of tokens) would only cost time before the first token.
        p = task.params.sampling
        if p.grammar or task.chain is None or not (penalties_on(p) or dry_on(p)):
            return
        window = max(p.repeat_last_n if p.repeat_last_n >= 0 else self.n_ctx_slot,
                     p.dry_penalty_last_n if p.dry_penalty_last_n >= 0 else self.n_ctx_slot)
        if window:
            task.chain.accept_many(task.prompt[-window:])

    def _step(self) -> None:
        batch = self._batch
        batch.clear()
        # The batch is built in slot (sequence id) order: llama.cpp splits a batch whose
        # sequence ids do not increase into several decodes (measured: 8 streams on an H200
        # ran at half speed once slots had been reused out of order).
        active = sorted(self._active, key=lambda t: t.slot.id if t.slot else -1)
        for task in active:
            task.out_index, task.chunk_len = -1, 0
        decoding = {id(t) for t in active if t.generating and self._make_room(t)}
        budget = batch.capacity - len(decoding)  # generating slots first, prompts share the rest
        for task in active:
            assert task.slot is not None
            if task.generating:
                if id(task) in decoding:
                    task.out_index = batch.add(task.last_token, task.n_past, task.slot.id, True)
                    task.chunk_len = 1
                continue
            if budget == 0:
                continue
            rest = task.prompt[task.n_past:]
            n = min(len(rest), budget)
            last = batch.add_sequence(rest[:n], task.n_past, task.slot.id, n == len(rest))
            task.out_index, task.chunk_len = (last if n == len(rest) else -1), n
            budget -= n
        if batch.n_tokens == 0:
            return
        interruptible = self._in_burst() and self._has_free_slot()
        if interruptible:
            self.ctx.allow_interrupt(True)
            if self._arriving:  # one began arriving while the batch was built: gather it first
                self.ctx.allow_interrupt(False)
                return
        t0 = time.perf_counter()
        try:
            self.ctx.decode(batch)
        except DecodeAbortedError:
            self._forget_decode()
            return
        except LlamaError as e:
            # With a unified KV cache the slots share its cells, and a full cache is a
            # load condition (code 1), not a bug: those requests may be retried.
            kind = "unavailable" if isinstance(e, NoKvSlotError) else "internal"
            _log.error("decode failed: %s", e)
            for task in [t for t in self._active if t.chunk_len]:
                slot = task.slot
                self._fail(task, kind, f"decode failed: {e}")
                if slot is not None:
                    self.ctx.seq_rm(slot.id)
                    slot.cache_tokens = []
            return
        finally:
            if interruptible:
                self.ctx.allow_interrupt(False)
        self._account(t0, time.perf_counter())
        ready = [t for t in list(self._active) if t.chunk_len and self._after_decode(t)]
        for task, result in zip(ready, self._sample_all(ready), strict=True):
            if isinstance(result, str):
                self._fail(task, "internal", f"sampling failed: {result}")
                continue
            if not task.generating:
                task.generating = True
                task.t_first = time.perf_counter()
            self.stats.tokens_predicted_total += 1
            self._accept_token(task, *result)

    def _forget_decode(self) -> None:
        """After an interrupted decode: the memory keeps nothing of this step, and its tasks
        stay where they were, to be decoded again with whatever joins them."""
        self.stats.decodes_interrupted += 1
        for task in self._active:
            if not task.chunk_len:
                continue
            assert task.slot is not None
            if not self.ctx.seq_rm(task.slot.id, task.n_past, -1):
                self.ctx.seq_rm(task.slot.id)  # this memory cannot drop a suffix: start over
                task.slot.cache_tokens = []
                task.n_past = task.n_cached = 0
        _log.debug("decode interrupted: a request arrived; doing it again with it")

    def _account(self, t0: float, t1: float) -> None:
        n_gen = sum(1 for t in self._active if t.generating and t.chunk_len)
        n_prompt = sum(t.chunk_len for t in self._active if not t.generating)
        dt = t1 - t0
        total = max(n_gen + n_prompt, 1)
        self.stats.n_decode_total += 1
        self.stats.n_busy_slots_total += len(self._active)
        self.stats.prompt_tokens_total += n_prompt
        self.stats.prompt_seconds_total += dt * n_prompt / total
        self.stats.tokens_predicted_seconds_total += dt * n_gen / total

    def _after_decode(self, task: Task) -> bool:
        """Record what the decode added to the task's slot; whether it now needs a token."""
        assert task.slot is not None
        added = [task.last_token] if task.generating else task.prompt[
            task.n_past:task.n_past + task.chunk_len]
        task.slot.cache_tokens.extend(added)
        task.n_past += task.chunk_len
        if task.out_index < 0:
            return False
        if not task.generating and self._limit(task) == 0:
            self._finish(task, "limit")  # n_predict 0: the prompt is now cached, nothing more
            return False
        return True

    def _sample_all(self, tasks: list[Task]) -> list[tuple[int, TokenProbs | None] | str]:
        """Each task's next token, with probabilities if asked, or why sampling failed.

        Plain sampling, the common case, runs for every task at once on the sampling threads:
        over a large vocabulary it costs more than the decode itself once many slots are busy.
        Requests for probabilities take the slower path, one by one.
        """
        plain = [t for t in tasks if not t.params.n_probs]
        work = [(_chain(t), t.out_index) for t in plain]
        try:
            tokens: list[int | str] = list(
                sample_parallel(self.ctx, work, self.settings.sampling_threads))
        except LlamaError as e:
            tokens = [str(e)] * len(plain)
        by_task = {id(t): tok for t, tok in zip(plain, tokens, strict=True)}
        out: list[tuple[int, TokenProbs | None] | str] = []
        for task in tasks:
            token = by_task.get(id(task))
            if token is None:
                out.append(self._sample_with_probs(task))
            elif token == NO_TOKEN:
                out.append("the sampler chain selected no token")
            else:
                out.append(token if isinstance(token, str) else (token, None))
        return out

    def _sample_with_probs(self, task: Task) -> tuple[int, TokenProbs] | str:
        chain, n_probs = _chain(task), task.params.n_probs
        try:
            if task.params.post_sampling_probs:
                token, top = chain.sample_with_probs(self.ctx, task.out_index, n_probs)
                value = next((p for t, p in top if t == token), 0.0)
                return token, TokenProbs(token, value, tuple(top), True)
            logits = self.ctx.logits_ith(task.out_index)
            top_list, lse = top_probs(logits, n_probs)
            token = chain.sample(self.ctx, task.out_index)
        except LlamaError as e:
            return str(e)
        value = float(logits[token]) - lse
        return token, TokenProbs(token, value, tuple((t.id, t.p) for t in top_list), False)

    def _limit(self, task: Task) -> int:
        """The generation limit: the request's n_predict within the server's, -1 for none."""
        req, srv = task.params.n_predict, self.settings.n_predict_default
        if req >= 0 and srv >= 0:
            return min(req, srv)
        return req if req >= 0 else srv

    def _accept_token(self, task: Task, token: int, probs: TokenProbs | None) -> None:
        task.generated.append(token)
        task.last_token = token
        task.pending_tokens.append(token)
        if probs is not None:
            task.pending_probs.append(probs)
        if token in self.eog and not task.params.ignore_eos:
            self._finish(task, "eos")
            return
        piece = self.vocab.token_to_piece(token, special=self.settings.special)
        text = task.stream.push(piece)
        if task.stream.stopped is not None:
            self._finish(task, task.stream.stopped.stop_type, text)
            return
        limit = self._limit(task)
        if 0 <= limit <= len(task.generated):
            self._finish(task, "limit", text)
            return
        tmax = task.params.t_max_predict_ms
        if tmax and (time.perf_counter() - task.t_first) * 1e3 > tmax and "\n" in task.stream.text:
            self._finish(task, "limit", text)
            return
        if text:
            self._emit_chunk(task, text)

    def _make_room(self, task: Task) -> bool:
        """Before decoding the next token: shift the context if it is full, or stop the task."""
        if task.n_past < self.n_ctx_slot:
            return True
        assert task.slot is not None
        if not self.settings.context_shift or not self.ctx.can_shift:
            task.truncated = True
            self._finish(task, "limit")
            return False
        n_keep = task.n_prompt if task.params.n_keep < 0 else task.params.n_keep
        n_keep = min(n_keep + (1 if self.vocab.add_bos else 0), task.n_past - 2)
        n_discard = (task.n_past - n_keep) // 2
        if n_keep < 0 or n_discard <= 0:
            task.truncated = True
            self._finish(task, "limit")
            return False
        seq = task.slot.id
        self.ctx.seq_rm(seq, n_keep, n_keep + n_discard)
        self.ctx.seq_add(seq, n_keep + n_discard, task.n_past, -n_discard)
        del task.slot.cache_tokens[n_keep:n_keep + n_discard]
        task.n_past -= n_discard
        task.truncated = True
        _log.info("slot %d: context shift, kept %d, discarded %d", seq, n_keep, n_discard)
        return True

    # -- endings and events -----------------------------------------------------------------
    def _emit(self, task: Task, event: Event) -> None:
        self._outbox.setdefault(task.sink, []).append(event)

    def _emit_chunk(self, task: Task, text: str) -> None:
        timings = task.timings(time.perf_counter()) if task.params.timings_per_token else None
        self._emit(task, Chunk(text, tuple(task.pending_tokens), tuple(task.pending_probs),
                               timings))
        task.pending_tokens.clear()
        task.pending_probs.clear()

    def _release(self, task: Task) -> None:
        if task in self._active:
            self._active.remove(task)
        if task.slot is not None:
            task.slot.task = None
            task.slot.last_used = time.perf_counter()
        if task.chain is not None:
            task.chain.close()
            task.chain = None
        self._by_id.pop(task.id, None)
        self.stats.requests_processing = len(self._active)

    def _finish(self, task: Task, stop_type: str, text: str = "") -> None:
        text += task.stream.flush()
        if text or task.pending_tokens:
            self._emit_chunk(task, text)
        now = time.perf_counter()
        stopped = task.stream.stopped
        self._emit(task, Finished(
            stop_type=stop_type,
            stopping_word=stopped.word if stopped else "",
            truncated=task.truncated,
            tokens_cached=task.n_cached,
            tokens_evaluated=task.n_prompt,
            timings=task.timings(now),
            content=task.stream.text,
            tokens=tuple(task.generated),
        ))
        self._release(task)

    def _fail(self, task: Task, code: str, message: str) -> None:
        self._emit(task, Failed(code, message))
        self._release(task)

    def _deliver(self) -> None:
        # Sinks on an event loop get this step's events in ONE call_soon_threadsafe per loop
        # (each such call wakes the loop with a syscall); other sinks are called directly.
        outbox, self._outbox = self._outbox, {}
        by_loop: dict[Any, list[tuple[LoopSink, list[Event]]]] = {}
        for sink, events in outbox.items():
            # Not isinstance(sink, LoopSink): a runtime protocol check costs ~15 us a call.
            if hasattr(sink, "deliver_local"):
                loop_sink = cast(LoopSink, sink)
                by_loop.setdefault(loop_sink.loop, []).append((loop_sink, events))
                continue
            try:
                sink(events)
            except Exception:  # a consumer that went away must not stop the engine
                _log.debug("dropping events for a closed stream", exc_info=True)
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver_on_loop, items)
            except RuntimeError:  # the loop is closed: its consumers are gone
                _log.debug("dropping events for a closed event loop")


def _chain(task: Task) -> SamplerChain:
    assert task.chain is not None, "an active task always has its sampler chain"
    return task.chain


def _deliver_on_loop(items: list[tuple[LoopSink, list[Event]]]) -> None:
    for sink, events in items:
        sink.deliver_local(events)

