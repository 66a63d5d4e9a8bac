"""The executor: carries out a scheduler Plan on the llama context — memory operations, one
`llama_decode` (interruptible during a burst), and sampling. It owns the Context and the Batch;
only the engine thread calls it."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from native import Batch, Context, LlamaError, LoraAdapter, SamplerChain
from native.errors import DecodeAbortedError
from native.sampler import NO_TOKEN, sample_parallel
from service.engine.events import TokenProbs
from service.engine.sampling import top_probs
from service.engine.scheduler import Plan, Scheduler
from service.engine.task import Task

_log = logging.getLogger(__name__)

Sampled = tuple[int, TokenProbs | None] | str  # a token (with probabilities if asked), or why not


class Executor:
    def __init__(self, ctx: Context, sampling_threads: int = 1,
                 adapters: Sequence[LoraAdapter] = ()) -> None:
        self.ctx = ctx
        self.sampling_threads = sampling_threads
        self._batch = Batch(ctx.n_batch)
        self.adapters = tuple(adapters)  # loaded LoRA adapters; an id is an index
        self._active: tuple[tuple[int, float], ...] | None = None  # None: not set by us yet
        # llama.cpp outputs every token of an embeddings context's batch whatever the batch
        # says, and logs a warning on each decode whose batch says otherwise (a callback into
        # Python, which takes the GIL, in the middle of the decode); llama-server flags them all.
        self._all_outputs = ctx.params.embeddings

    def use_adapters(self, adapter_set: tuple[tuple[int, float], ...]) -> None:
        """Make the context decode with this LoRA set: (adapter id, scale) pairs. A call per
        decode; llama.cpp is called only when the set changes."""
        if not self.adapters or adapter_set == self._active:
            return
        self.ctx.set_lora_adapters([(self.adapters[i], scale) for i, scale in adapter_set])
        self._active = adapter_set

    def apply_memory(self, plan: Plan, scheduler: Scheduler) -> None:
        """Drop the cells the plan frees, and each admitted request's stale cached suffix."""
        for seq in plan.cleared:
            self.ctx.seq_rm(seq)
        for adm in plan.admitted:
            for pos_p, pos_c, n in adm.shifts:  # cache reuse: runs moved back, in order
                self.ctx.seq_rm(adm.slot, pos_p, pos_c)
                self.ctx.seq_add(adm.slot, pos_c, pos_c + n, pos_p - pos_c)
            if not self.ctx.seq_rm(adm.slot, adm.n_reuse, -1):
                self.ctx.seq_rm(adm.slot)  # this memory cannot drop a suffix: start over
                scheduler.reset_cache(adm.request)
        for src, dst, end in plan.copies:
            # Whole: a copy between two caches (one per slot) must be whole in libllama.
            self.ctx.seq_rm(dst)
            self.ctx.seq_cp(src, dst)
            if not self.ctx.seq_rm(dst, end, -1):  # this memory cannot drop a suffix
                self.ctx.seq_rm(dst)
                task = scheduler.slots[dst].task
                if task is not None:
                    scheduler.reset_cache(task)

    def drop(self, seq: int) -> None:
        if seq >= 0:
            self.ctx.seq_rm(seq)

    def build(self, plan: Plan) -> list[Task]:
        """Fill the batch with the plan's work; the tasks whose logits are to be sampled
        (their `out_index` set)."""
        batch = self._batch
        batch.clear()
        ready: list[Task] = []
        for w in plan.work:
            task = w.request
            assert isinstance(task, Task)
            task.verify = ()  # a draft is verified only after the decode that carries it
            if len(w.tokens) == 1:  # a decode token: the cheaper single add
                last = batch.add(w.tokens[0], w.pos, w.seq_id, w.n_outputs > 0)
            elif task.generating:  # a draft to verify: logits at every position
                first = batch.n_tokens
                last = batch.add_sequence(w.tokens, w.pos, w.seq_id, True)
                batch.logits[first:last] = b"\x01" * (last - first)
                task.out_index, task.verify = first, tuple(w.tokens[1:])
                ready.append(task)
                continue
            else:
                last = batch.add_sequence(w.tokens, w.pos, w.seq_id, w.n_outputs > 0)
            if w.n_outputs:
                task.out_index = last
                ready.append(task)
        if self._all_outputs:
            batch.set_all_outputs(True)
        return ready

    def decode(self, plan: Plan, interruptible: bool, wake_fd: int = -1) -> bool:
        """Decode the built batch (writing a byte to `wake_fd` first, if >= 0: Context.decode)
        and wait for the backend in the same native call, so that the GIL is taken back once,
        after the GPU's work (native/_cffi_src/interrupt.c says why); False when an arrival
        interrupted it (nothing of it stays in the cells). Raises LlamaError when the decode
        fails."""
        try:
            self.ctx.decode(self._batch, wake_fd, synchronize=True)
        except DecodeAbortedError:
            self._forget(plan)
            return False
        finally:
            if interruptible:
                self.ctx.allow_interrupt(False)
        return True

    def _forget(self, plan: Plan) -> None:
        """After an interrupted decode: the memory keeps nothing of this step."""
        for w in plan.work:
            if not self.ctx.seq_rm(w.seq_id, w.pos, -1):
                self.ctx.seq_rm(w.seq_id)  # cannot drop a suffix: the sequence starts over
                task = w.request
                assert task.slot is not None
                task.slot.cache_tokens = []
                task.n_past = task.n_cached = 0
        _log.debug("decode interrupted: a request arrived; doing it again with it")

    def shift(self, task: Task, n_keep: int, n_discard: int) -> None:
        """Context shift: discard n_discard positions after the first n_keep."""
        assert task.slot is not None
        seq = task.slot.id
        self.ctx.seq_rm(seq, n_keep, n_keep + n_discard)
        self.ctx.seq_add(seq, n_keep + n_discard, task.n_past, -n_discard)
        del task.slot.cache_tokens[n_keep:n_keep + n_discard]
        task.n_past -= n_discard
        task.truncated = True
        _log.info("slot %d: context shift, kept %d, discarded %d", seq, n_keep, n_discard)

    def sample(self, tasks: Sequence[Task]) -> list[Sampled]:
        """Each task's next token, with probabilities if asked, or why sampling failed.

        Plain sampling, the common case, runs for every task at once on the sampling threads:
        over a large vocabulary it costs more than the decode itself once many slots are busy.
        Requests for probabilities take the slower path, one by one.
        """
        if all(t.budget is None and t.lazy is None and not t.params.n_probs for t in tasks):
            return self._sample_plain(tasks)  # the per-token path: one native call, no maps
        forced = {id(t): tok for t in tasks if t.budget is not None
                  and (tok := t.budget.forced()) is not None}
        plain = [t for t in tasks if not t.params.n_probs and id(t) not in forced]
        work = [(_chain(t), t.out_index) for t in plain]
        try:
            tokens: list[int | str] = list(
                sample_parallel(self.ctx, work, self.sampling_threads))
        except LlamaError as e:
            tokens = [str(e)] * len(plain)
        by_task = {id(t): tok for t, tok in zip(plain, tokens, strict=True)}
        out: list[Sampled] = []
        for task in tasks:
            token = by_task.get(id(task))
            if id(task) in forced:
                out.append(self._forced(task, forced[id(task)]))
            elif token is None:
                out.append(self._sample_with_probs(task))
            elif token == NO_TOKEN:
                out.append(NO_TOKEN_SELECTED)
            else:
                out.append(token if isinstance(token, str) else (token, None))
        for task, result in zip(tasks, out, strict=True):
            if task.budget is not None and not isinstance(result, str):
                task.budget.accept(result[0])
            if task.lazy is not None and not isinstance(result, str):
                task.lazy.accept(_chain(task), result[0])  # a tool call may start here
        return out

    def _sample_plain(self, tasks: Sequence[Task]) -> list[Sampled]:
        """sample() for tasks without probabilities, a thinking budget or a lazy grammar."""
        try:
            tokens = sample_parallel(self.ctx, [(_chain(t), t.out_index) for t in tasks],
                                     self.sampling_threads)
        except LlamaError as e:
            return [str(e)] * len(tasks)
        return [NO_TOKEN_SELECTED if token == NO_TOKEN else (token, None) for token in tokens]

    def _forced(self, task: Task, token: int) -> Sampled:
        """A token the thinking budget forces in place of sampling (service.reasoning_budget);
        the chain takes it as if sampled. Probabilities: the model's, or after sampling 1."""
        chain = _chain(task)
        try:
            chain.accept(token)
            if not task.params.n_probs or task.params.post_sampling_probs:
                probs = TokenProbs(token, 1.0, ((token, 1.0),), True)
                return token, probs if task.params.n_probs else None
            top_list, lse = top_probs(self.ctx.logits_ith(task.out_index), task.params.n_probs)
            value = float(self.ctx.logits_ith(task.out_index)[token]) - lse
        except LlamaError as e:
            return str(e)
        return token, TokenProbs(token, value, tuple((t.id, t.p) for t in top_list), False)

    def _sample_with_probs(self, task: Task) -> Sampled:
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
        if token == NO_TOKEN:
            return NO_TOKEN_SELECTED
        value = float(logits[token]) - lse
        return token, TokenProbs(token, value, tuple((t.id, t.p) for t in top_list), False)


# A request's own constraints (grammar, logit biases) left no token: the request's fault.
NO_TOKEN_SELECTED = "the sampler chain selected no token (the grammar or logit_bias excludes " \
    "every token)"


def _chain(task: Task) -> SamplerChain:
    assert task.chain is not None, "an active task always has its sampler chain"
    return task.chain
