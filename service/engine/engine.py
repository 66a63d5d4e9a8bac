"""The engine: one thread owns the llama context and runs the continuous-batching loop.

Each step is three calls (docs/design.md): the scheduler decides what runs (`Scheduler.schedule`
returns a Plan: cancellations, admissions, which tokens of which sequences go into one decode),
the executor carries it out (memory operations, `llama_decode`, sampling), and the update turns
each sampled token into events with one stop decision (`update.stop_reason`). Every request gets
its step's events in one hand-off. Native calls never run on the asyncio event loop.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import TypeVar, cast

from native import Context, LlamaError, LoraAdapter, Model
from service.engine.arrival import ARRIVAL_WAIT_S, BURST_WINDOW_S, Arrival, ArrivalCounter
from service.engine.chains import build_task_chain
from service.engine.embedding import read_embedding
from service.engine.events import Chunk, Event, Failed, Finished, Progress, Started, TokenProbs
from service.engine.executor import NO_TOKEN_SELECTED, Executor
from service.engine.inbox import EngineStoppedError, Inbox, QueueFullError
from service.engine.media_step import decode_media
from service.engine.monitor import Monitor
from service.engine.outbox import Outbox
from service.engine.scheduler import Limits, Load, Plan, Scheduler
from service.engine.settings import EngineSettings, EngineStats
from service.engine.slots import Slot
from service.engine.speculation import Speculator, verify
from service.engine.task import Task
from service.engine.textstream import TextStream
from service.engine.timeline import BUILD, INTAKE, POST, SAMPLE, SCHEDULE, TOKENS, from_env
from service.engine.update import StopRules, accept, shift_span, slot_full, stop_reason

_log = logging.getLogger(__name__)
T = TypeVar("T")
# The engine thread's stack: libllama's grammar parser recurses once per nesting level of a
# grammar (service/grammar_limits.py bounds the depth; this leaves a wide margin).
ENGINE_STACK_BYTES = 64 << 20

# Test hook (tests/test_faults.py): the Nth step of the loop raises, as a bug in it would. Unset
# in deployments.
FAULT_AT_STEP_ENV = "LLAMA_GRPC_TEST_ENGINE_FAULT_AT_STEP"

__all__ = ["ARRIVAL_WAIT_S", "BURST_WINDOW_S", "Arrival", "Engine", "EngineSettings",
           "EngineStoppedError", "QueueFullError"]


class Engine:
    def __init__(self, model: Model, ctx: Context, settings: EngineSettings | None = None,
                 adapters: Sequence[LoraAdapter] = (),
                 speculator: Speculator | None = None) -> None:
        self.model, self.ctx, self.vocab = model, ctx, model.vocab
        self.speculator = speculator  # drafts for speculative decoding, if the server has any
        self.settings = settings or EngineSettings()
        self.slots = [Slot(i) for i in range(ctx.n_seq_max)]
        # As llama-server's n_ctx_slot(): a slot holds at most what the model was trained on.
        n_train = model.n_ctx_train
        self.n_ctx_slot = min(ctx.n_ctx_seq, n_train) if n_train > 0 else ctx.n_ctx_seq
        self.stats = EngineStats()
        if speculator is not None:  # its acceptance counters are the engine's
            speculator.stats = self.stats
            speculator.n_ctx_seq = self.n_ctx_slot
        self.eog = self.vocab.eog_tokens()
        self.scheduler = Scheduler(Limits(
            n_batch=ctx.n_batch, n_ctx_seq=self.n_ctx_slot, kv_cells=ctx.n_ctx,
            kv_shared=ctx.n_ctx_seq * ctx.n_seq_max > ctx.n_ctx,
            slot_prompt_similarity=self.settings.slot_prompt_similarity,
            can_shift=ctx.can_shift and not self.settings.multimodal), self.slots)
        self.executor = Executor(ctx, self.settings.sampling_threads, adapters)
        self.monitor = Monitor(self.slots, ctx.n_ctx)  # what /metrics and /slots read
        self.monitor.publish(self.stats, self.scheduler)
        self.rules = StopRules(eog=self.eog, n_ctx_seq=self.n_ctx_slot,
                               can_shift=(self.settings.context_shift and ctx.can_shift
                                          and not self.settings.multimodal),
                               add_bos=self.vocab.add_bos)
        self._inbox = Inbox(self.settings.max_queue)  # tasks, calls and wake-ups for the loop
        self._outbox = Outbox()  # a step's events, delivered together
        self._stopping = False
        self._arrivals = ArrivalCounter()
        self.on_fatal: Callable[[BaseException], None] | None = None
        self._fault_at_step = int(os.environ.get(FAULT_AT_STEP_ENV) or 0)
        self._n_steps = 0
        self._timeline = from_env()  # off unless measuring (timeline.py)
        previous = threading.stack_size(ENGINE_STACK_BYTES)
        try:
            self._thread = threading.Thread(target=self._run, name="llama-engine", daemon=True)
        finally:
            threading.stack_size(previous)

    # -- API for other threads --------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        self._inbox.wake()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self._outbox.close()
        try:
            self._timeline.write()
        except OSError as e:  # a measurement's file: never a reason to fail a shutdown
            _log.warning("step timeline not written: %s", e)

    def submit(self, task: Task, arrival: Arrival | None = None) -> None:
        """Queue a generation; its events go to task.sink. Never blocks. `arrival`, the
        request's, closes when the engine takes this task (give it with a request's last).
        Raises QueueFullError when --max-queue requests already wait."""
        self._inbox.put_task(task, arrival, len(self.scheduler.waiting))

    def cancel(self, task: Task) -> None:
        """Stop a generation wherever it is: queued (it never takes a slot), running (it leaves
        before the next decode and its cells are freed), or already ended (nothing happens)."""
        task.cancelled = True
        self._inbox.wake()  # wake the loop if idle

    def call(self, fn: Callable[[], T]) -> Future[T]:
        """Run fn on the engine thread between two steps (for slot save/restore, load...)."""
        fut: Future[T] = Future()

        def job() -> None:
            if fut.set_running_or_notify_cancel():
                try:
                    if self.fatal is not None:  # never run on the state a failed loop left
                        raise self._inbox.stopped_error()
                    fut.set_result(fn())
                except BaseException as e:  # handed to the caller, not raised here
                    fut.set_exception(e)

        self._inbox.put_call(job)
        return fut

    def load(self) -> Future[Load]:
        return self.call(self.scheduler.load)

    @property
    def fatal(self) -> BaseException | None:
        """Set once, by the engine thread, when its loop raised: what every later request
        gets."""
        return self._inbox.fatal

    @property
    def n_waiting(self) -> int:
        return len(self.scheduler.waiting)

    @property
    def n_arriving(self) -> int:
        """Open Arrivals: requests being read that the engine has no task of yet."""
        return self._arrivals.open

    # -- Arrival's target (engine.arrival.ArrivalTarget) ------------------------------------
    def arrival_opened(self) -> None:
        with self._arrivals.lock:
            self._arrivals.open += 1
        # After counting, so that an engine about to decode either sees this arrival or has
        # already allowed its decode to be interrupted (_decode).
        if self._arrivals.in_window():
            self.ctx.interrupt()

    def arrival_closed(self, taken: bool) -> None:
        with self._arrivals.lock:
            self._arrivals.open -= 1
        if not taken:
            self._inbox.wake()  # ended with no task: wake an engine waiting for it

    # -- the loop ---------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as e:  # whatever it was, the engine is gone
            self._die(e)
            return
        for task in list(self.scheduler.pending()):
            self._fail(cast(Task, task), "unavailable", "server is shutting down")
        self._outbox.deliver()
        self._outbox.wake_all()

    def _loop(self) -> None:
        # An exception here is a bug, and the context and slots may no longer agree after it
        # (a decode half done, cells not freed): going on could serve wrong text, so it ends
        # the loop (_die), and the process exits for a supervisor to restart it.
        tl = self._timeline
        while not self._stopping:
            try:
                tl.begin()
                idle = not self.scheduler.running and not self.scheduler.waiting
                self._intake(block=idle)
                if idle:
                    self._arrivals.burst_until = time.monotonic() + BURST_WINDOW_S
                    tl.begin()  # waiting for work is no step's time
                self._gather(wait_for_arrivals=self._in_burst())
                tl.mark(INTAKE)
                if self.scheduler.running or self.scheduler.waiting:
                    self._step()
                    self._outbox.wake_all()  # events no decode of this step took along
            finally:
                self._outbox.deliver()
                self.monitor.publish(self.stats, self.scheduler)
                tl.end(self.stats.tokens_predicted_total)

    def _die(self, exc: BaseException) -> None:
        """Fail every request the engine holds or will be handed, then tell the server."""
        _log.critical("the engine thread stopped: %s: %s", type(exc).__name__, exc,
                      exc_info=exc)
        queued = self._inbox.kill(exc)
        message = str(self._inbox.stopped_error())
        running = {id(t) for t in self.scheduler.running}
        doomed: list[Task] = [cast(Task, t) for t in self.scheduler.pending()] + queued
        for task in doomed:
            # What ran in the failed step had streamed part of its answer: INTERNAL; what
            # waited may be retried elsewhere as it is: UNAVAILABLE.
            code = "internal" if id(task) in running else "unavailable"
            try:
                self._end(task, Failed(code, message))
            except Exception:  # the state is broken: the event matters
                self._emit(task, Failed(code, message))
        try:
            self._outbox.deliver()
            self._outbox.wake_all()
        finally:
            if self.on_fatal is not None:
                self.on_fatal(exc)

    def _in_burst(self) -> bool:
        """Within BURST_WINDOW_S of leaving idle, with no request generating yet: requests
        that begin arriving are worth waiting for, and worth redoing a prompt decode for."""
        return (self._arrivals.in_window()
                and not any(t.generating for t in self.scheduler.running))

    def _room_for_more(self) -> bool:
        """Whether a request arriving now could still be admitted into this step."""
        return sum(1 for s in self.slots if s.idle) > len(self.scheduler.waiting)

    def _gather(self, wait_for_arrivals: bool) -> None:
        """Take into this step the requests that came in meanwhile: requests sent together
        reach the engine a few tenths of a millisecond apart, and a burst sent to an idle
        server is prefilled together (docs/benchmarks.md, item 8). In a burst, also wait (up
        to ARRIVAL_WAIT_S) for open Arrivals. At most one look per slot, none once full."""
        if self._inbox.empty() and not (wait_for_arrivals and self._arrivals.open > 0):
            return  # the usual step: nothing came, nothing to wait for (no slot count)
        deadline = time.monotonic() + ARRIVAL_WAIT_S
        for _ in self.slots:
            if not self._room_for_more():
                return
            if not self._inbox.empty():
                self._intake(block=False)
                continue
            timeout = deadline - time.monotonic()
            if not (wait_for_arrivals and self._arrivals.open > 0 and timeout > 0):
                return
            self._intake(block=True, timeout=timeout)

    def _intake(self, block: bool, timeout: float | None = None) -> None:
        """Take what the inbox holds (waiting for it if `block`, up to `timeout`) and admit
        what fits now, so that admitted requests get their Started events while the rest of
        a burst is gathered."""
        if block:  # nothing may wait for a decode that is not coming
            self._outbox.wake_all()
        if self._inbox.drain(block, timeout, self._take):
            self._apply(self.scheduler.schedule())

    def _take(self, task: Task) -> Callable[[], None] | None:
        """A task from the inbox: what adds it to the scheduler's queue, or None if refused."""
        if task.arrival is not None:
            task.arrival.close()
        refusal = self.scheduler.never_fits(task)
        if refusal:
            self._fail(task, "invalid_argument", refusal)
            return None
        return lambda: self.scheduler.add(task)

    # -- one step: schedule, execute, update -----------------------------------------------
    def _step(self) -> None:
        self._n_steps += 1
        if self._n_steps == self._fault_at_step:
            raise RuntimeError(f"fault injected at step {self._n_steps} ({FAULT_AT_STEP_ENV})")
        if self.speculator is not None:
            self.speculator.propose(cast(list[Task], self.scheduler.running))
        plan = self.scheduler.schedule()
        self._apply(plan)
        if plan.media:
            ended = decode_media(self.ctx, self.scheduler, plan.media,
                                 lambda w, why: self._fail(cast(Task, w.request), "internal", why))
            if ended:
                self._after_media(ended)
        tl = self._timeline
        tl.mark(SCHEDULE)
        if not plan.work:
            return
        t0 = time.perf_counter()
        ready = self._decode(plan)
        if ready is None:
            return
        tl.decoded(self.ctx, plan.n_tokens)
        self.scheduler.advance(plan)
        self.stats.account(plan, len(self.scheduler.running), time.perf_counter() - t0)
        self._progress(plan)
        wanted = []
        for task in ready:
            if task.embedding:
                self._embedded(task)
            elif not task.generating and task.n_predict == 0:
                self._finish(task, "limit")  # the prompt is now cached, nothing more
            else:
                wanted.append(task)
        tl.mark(POST)
        plain = [t for t in wanted if not t.verify]
        for task in (t for t in wanted if t.verify):  # speculative: service/engine/speculation
            assert self.speculator is not None
            failed = verify(self.ctx, self.scheduler, self.speculator, task,
                            lambda t, token: self._on_token(t, token, None))
            if failed is not None:
                self._fail(task, "invalid_argument" if failed == NO_TOKEN_SELECTED
                           else "internal", f"sampling failed: {failed}")
        results = self.executor.sample(plain)
        tl.mark(SAMPLE)
        for task, result in zip(plain, results, strict=True):
            if isinstance(result, str):
                kind = "invalid_argument" if result == NO_TOKEN_SELECTED else "internal"
                self._fail(task, kind, f"sampling failed: {result}")
            else:
                self._on_token(task, *result)
        self.monitor.sampled(wanted, time.perf_counter())
        tl.mark(TOKENS)

    def _after_media(self, tasks: list[Task]) -> None:
        """Prompts that ended with a medium: their output (logits or embedding) is taken now,
        before the plan's decode overwrites it. No drafts: a task with media never speculates."""
        wanted = []
        for task in tasks:
            if task.embedding:
                self._embedded(task)
            elif task.n_predict == 0:
                self._finish(task, "limit")
            else:
                wanted.append(task)
        if not wanted:
            return
        for task, result in zip(wanted, self.executor.sample(wanted), strict=True):
            if isinstance(result, str):
                kind = "invalid_argument" if result == NO_TOKEN_SELECTED else "internal"
                self._fail(task, kind, f"sampling failed: {result}")
            else:
                self._on_token(task, *result)
                # first tokens only: monitor.sampled would restart the step's token-gap clock
                self.monitor.ttft.observe(max(task.t_first - task.submitted, 0.0))

    def _apply(self, plan: Plan) -> None:
        """A plan's cancellations, memory operations and admissions (their Started events
        are delivered at once)."""
        for task in plan.cancelled:
            self._end(cast(Task, task), Failed("cancelled", "generation cancelled"))
        if plan.cancelled:
            self.monitor.cancelled(len(plan.cancelled))
        self.executor.apply_memory(plan, self.scheduler)
        for adm in plan.admitted:
            self._start(cast(Task, adm.request))
        self.stats.requests_processing = len(self.scheduler.running)
        self.stats.requests_deferred = len(self.scheduler.waiting)
        if self._outbox:
            # Started events now, not with the first token after the prompt's decode: the
            # consumer (a gRPC stream, the REST bridge setting up its SSE response) does its
            # per-request work while the prompt is decoded.
            self._outbox.deliver()

    def _decode(self, plan: Plan) -> list[Task] | None:
        """Run the plan's decode; the tasks to sample, or None if nothing was decoded (an
        arrival came first or interrupted it, or the decode failed)."""
        ready = self.executor.build(plan)
        self.executor.use_adapters(plan.adapters)
        interruptible = self._in_burst() and self._room_for_more()
        if interruptible:
            self.ctx.allow_interrupt(True)
            if self._arrivals.open:  # one began arriving while planning: gather it first
                self.ctx.allow_interrupt(False)
                return None
        self._timeline.mark(BUILD)
        # The loops get the events so far as this decode starts, while it runs (waker.py).
        waker = self._outbox.take_waker()
        try:
            if self.executor.decode(plan, interruptible, waker.write_fd if waker else -1):
                return ready
        except LlamaError as e:
            if waker is not None:  # maybe refused before the wake-up was written
                waker.wake()
            _log.error("decode failed: %s", e)
            for w in plan.work:
                self._fail(cast(Task, w.request), "internal", f"decode failed: {e}")
            return None
        self.stats.decodes_interrupted += 1
        return None

    def _start(self, task: Task) -> None:
        task.stream = TextStream(task.params.stop, task.params.n_indent)
        task.t_start = time.perf_counter()
        if task.chain is None and not task.embedding:  # built here unless the service
            # built it (a grammar); an embedding input samples nothing
            try:
                task.chain = build_task_chain(task.params, self.vocab, self.eog,
                                              self.n_ctx_slot, task.prompt)
            except (LlamaError, ValueError) as e:  # a request libllama refuses: its own fault
                self._fail(task, "invalid_argument" if isinstance(e, ValueError)
                           else "internal", str(e))
                return
        assert task.slot is not None
        if not task.embedding:  # no consumer of an embedding input reads it, and an event
            # would wake the loop at the decode's start (waker.py), for nothing
            self._emit(task, Started(task.id, task.slot.id, len(task.prompt), task.n_cached))
        self.monitor.started(task)

    def _progress(self, plan: Plan) -> None:
        """llama-server's prompt_progress after each decode of a prompt chunk, for requests
        that asked for it (return_progress, streaming)."""
        now = time.perf_counter()
        for w in plan.work:
            task = cast(Task, w.request)
            if not task.generating and task.params.return_progress:
                self._emit(task, Progress(task.n_prompt, task.n_cached, task.n_past,
                                          (now - task.t_start) * 1e3))

    def _on_token(self, task: Task, token: int, probs: TokenProbs | None) -> None:
        accept(task, token, probs)
        self.stats.tokens_predicted_total += 1
        text = ""
        if token not in self.eog or task.params.ignore_eos:
            special = self.settings.special or token in task.params.keep_special
            text = task.stream.push(self.vocab.token_to_piece(token, special=special))
        reason = stop_reason(task, token, self.rules)
        if reason is not None:
            self._finish(task, reason, text)
            return
        if slot_full(task, self.rules):  # stop_reason found that it can shift
            span = shift_span(task, self.rules)
            assert span is not None
            self.executor.shift(task, *span)
        if text:
            self._emit_chunk(task, text)

    # -- endings and events -----------------------------------------------------------------
    def _emit(self, task: Task, event: Event) -> None:
        self._outbox.emit(task.sink, event)

    def _emit_chunk(self, task: Task, text: str, timed: bool = False) -> None:
        timed = timed or task.params.timings_per_token
        timings = task.timings(time.perf_counter()) if timed else None
        self._emit(task, Chunk(text, tuple(task.pending_tokens), tuple(task.pending_probs),
                               timings))
        task.pending_tokens.clear()
        task.pending_probs.clear()

    def _end(self, task: Task, event: Event) -> None:
        task.ended = True
        self._emit(task, event)
        self.monitor.ended(task, isinstance(event, Finished))
        task.release_chain()
        self.stats.requests_processing = len(self.scheduler.running)

    def _finish(self, task: Task, stop_type: str, text: str = "") -> None:
        text += task.stream.flush()
        if text or task.pending_tokens:
            # llama-server's last partial of a stop-string ending carries the timings (it knows
            # it is the last one); of other endings it does not.
            self._emit_chunk(task, text, timed=stop_type == "word")
        stopped = task.stream.stopped
        self.scheduler.finish(task)
        self._end(task, Finished(
            stop_type=stop_type, stopping_word=stopped.word if stopped else "",
            truncated=task.truncated, tokens_cached=task.n_cached,
            tokens_evaluated=task.n_prompt, timings=task.timings(time.perf_counter()),
            content=task.stream.text, tokens=tuple(task.generated)))

    def _embedded(self, task: Task) -> None:
        """An embedding input's decode is done: its result ends it, and its cells go at once
        (nothing reuses an embedded prompt; the slot's next input must not attend to it)."""
        try:
            event = read_embedding(self.ctx, task)
        except LlamaError as e:
            self._fail(task, "internal", f"no embedding for this input: {e}")
            return
        self.executor.drop(self.scheduler.drop(task))
        self._end(task, event)

    def _fail(self, task: Task, code: str, message: str) -> None:
        self.executor.drop(self.scheduler.drop(task))
        self._end(task, Failed(code, message))
