"""A llama_context: decode/encode, logits and embeddings as float views, KV memory and state.

Every entry point validates its input first: llama.cpp aborts the process on some invalid input
(sequence ids or positions out of range, token ids outside the vocabulary).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from native._ffi import captured_log, decoding, ffi, lib
from native.batch import Batch
from native.buffers import BufferSize, parse_buffer_sizes
from native.errors import ContextError, InvalidInputError, StateError, decode_error
from native.model import Model

if TYPE_CHECKING:
    from native.lora import LoraAdapter

_FLASH_ATTN = {"auto": -1, "off": 0, "on": 1}
_POOLING = {None: -1, "none": 0, "mean": 1, "cls": 2, "last": 3, "rank": 4}
_ROPE_SCALING = {None: -1, "none": 0, "linear": 1, "yarn": 2, "longrope": 3}
KV_CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")


@dataclass(frozen=True)
class ContextParams:
    n_ctx: int = 0  # 0: the model's training context
    n_batch: int = 2048
    n_ubatch: int = 512
    n_seq_max: int = 1
    n_threads: int | None = None  # None: llama.cpp's default (physical cores)
    n_threads_batch: int | None = None
    embeddings: bool = False
    pooling: str | None = None  # None: the model's own
    flash_attn: str = "auto"
    type_k: str = "f16"
    type_v: str = "f16"
    offload_kqv: bool = True
    op_offload: bool = True  # offload host tensor operations to the device
    kv_unified: bool = False
    swa_full: bool = False
    no_perf: bool = False
    rope_scaling: str | None = None
    rope_freq_base: float = 0.0
    rope_freq_scale: float = 0.0
    yarn_orig_ctx: int = 0
    yarn_ext_factor: float = -1.0
    yarn_attn_factor: float = -1.0
    yarn_beta_fast: float = -1.0
    yarn_beta_slow: float = -1.0


def _ggml_type(name: str) -> int:
    if name not in KV_CACHE_TYPES:
        raise InvalidInputError(f"unsupported KV cache type {name!r}; one of {KV_CACHE_TYPES}")
    return int(getattr(lib, f"GGML_TYPE_{name.upper()}"))


def _choice(table: dict[Any, int], value: Any, what: str) -> int:
    if value not in table:
        raise InvalidInputError(f"invalid {what} {value!r}; one of {[k for k in table if k]}")
    return table[value]


def _c_params(p: ContextParams) -> Any:
    c = lib.llama_context_default_params()
    c.n_ctx, c.n_batch, c.n_ubatch, c.n_seq_max = p.n_ctx, p.n_batch, p.n_ubatch, p.n_seq_max
    if p.n_threads is not None:
        c.n_threads = p.n_threads
    if p.n_threads_batch is not None or p.n_threads is not None:
        c.n_threads_batch = p.n_threads_batch or p.n_threads
    c.embeddings = p.embeddings
    c.pooling_type = _choice(_POOLING, p.pooling, "pooling type")
    c.flash_attn_type = _choice(_FLASH_ATTN, p.flash_attn, "flash-attn mode")
    c.rope_scaling_type = _choice(_ROPE_SCALING, p.rope_scaling, "rope scaling")
    c.type_k, c.type_v = _ggml_type(p.type_k), _ggml_type(p.type_v)
    c.offload_kqv, c.op_offload, c.kv_unified, c.swa_full, c.no_perf = (
        p.offload_kqv, p.op_offload, p.kv_unified, p.swa_full, p.no_perf)
    c.rope_freq_base, c.rope_freq_scale = p.rope_freq_base, p.rope_freq_scale
    c.yarn_orig_ctx, c.yarn_ext_factor = p.yarn_orig_ctx, p.yarn_ext_factor
    c.yarn_attn_factor, c.yarn_beta_fast, c.yarn_beta_slow = (
        p.yarn_attn_factor, p.yarn_beta_fast, p.yarn_beta_slow)
    return c


class Context:
    """Owns a llama_context over a Model (kept alive). Not thread-safe: one owner thread."""

    def __init__(self, model: Model, params: ContextParams | None = None) -> None:
        self._ptr: Any = ffi.NULL
        self.model = model
        self.params = params or ContextParams()
        p = self.params
        if p.n_seq_max < 1 or p.n_seq_max > int(lib.llama_max_parallel_sequences()):
            raise InvalidInputError(
                f"n_seq_max must be 1..{int(lib.llama_max_parallel_sequences())}")
        if p.n_batch < 1 or p.n_ubatch < 1 or p.n_ctx < 0:
            raise InvalidInputError("n_batch and n_ubatch must be >= 1 and n_ctx >= 0")
        with captured_log() as lines:
            ptr = lib.llama_init_from_model(model.ptr, _c_params(p))
        # Its KV (or recurrent state), output and compute buffers by type, as llama.cpp logged
        # them: llama.h returns none of their sizes. The compute buffers are as reserved here.
        self.buffers: tuple[BufferSize, ...] = parse_buffer_sizes(lines)
        if ptr == ffi.NULL:
            raise ContextError("llama.cpp could not create the context (see its log: often "
                               "out of memory for this n_ctx, or invalid parameters)")
        self._ptr = ptr
        self._interrupt = ffi.new("int *")  # see interrupt(); freed after the context
        self._launched = ffi.new("double[2]")  # see launched
        lib.llama_grpc_watch_interrupt(ptr, self._interrupt)
        self._mem = lib.llama_get_memory(ptr)
        self.n_ctx = int(lib.llama_n_ctx(ptr))
        self.n_ctx_seq = int(lib.llama_n_ctx_seq(ptr))
        self.n_batch = int(lib.llama_n_batch(ptr))
        self.n_ubatch = int(lib.llama_n_ubatch(ptr))
        self.n_seq_max = int(lib.llama_n_seq_max(ptr))
        self.n_vocab = model.vocab.n_tokens
        self.pooling = int(lib.llama_pooling_type(ptr))

    @property
    def ptr(self) -> Any:
        if self._ptr == ffi.NULL:
            raise ValueError("context is closed")
        return self._ptr

    def close(self) -> None:
        if self._ptr != ffi.NULL:
            lib.llama_free(self._ptr)
            self._ptr = ffi.NULL

    def __enter__(self) -> Context:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def warmup(self) -> None:
        """One short run at start-up, as llama-server does, so that the first request does not
        pay for first-use costs (weights paged in, buffers and kernels set up). Forgets whatever
        the memory held before and leaves it empty, with the perf counters reset."""
        model, vocab = self.model, self.model.vocab
        self.memory_clear()
        tokens = [t for t in (vocab.bos, vocab.eos) if t >= 0] or [0]
        batch = Batch(len(tokens))
        if model.has_encoder:
            batch.add_sequence(tokens, 0, 0, output_last=True)
            self.encode(batch)
            start = int(lib.llama_model_decoder_start_token(model.ptr))
            tokens = [start if start >= 0 else vocab.bos]
        if model.has_decoder and tokens[0] >= 0:
            batch.clear()
            batch.add_sequence(tokens[:self.n_batch], 0, 0, output_last=True)
            self.decode(batch)
        lib.llama_synchronize(self.ptr)
        self.memory_clear()
        self.perf_reset()

    # -- validation -------------------------------------------------------------------------
    def check_seq(self, seq_id: int, allow_all: bool = False) -> None:
        if allow_all and seq_id == -1:
            return
        if not 0 <= seq_id < self.n_seq_max:
            raise InvalidInputError(
                f"sequence id {seq_id} out of range (0..{self.n_seq_max - 1})")

    def check_batch(self, batch: Batch) -> None:
        n = batch.n_tokens
        if n == 0:
            raise InvalidInputError("empty batch")
        if n > self.n_batch:
            raise InvalidInputError(f"batch of {n} tokens exceeds n_batch {self.n_batch}")
        if n == 1:  # a single stream's decode step: the same checks without three lists
            self.model.vocab.check_token(batch.tokens[0])
            seq, pos = [batch.seq_id[0]], [batch.pos[0]]
        else:
            self.model.vocab.check_ids(ffi.unpack(batch.tokens, n))
            seq, pos = ffi.unpack(batch.seq_id, n), ffi.unpack(batch.pos, n)
        if min(seq) < 0 or max(seq) >= self.n_seq_max:
            raise InvalidInputError(
                f"sequence id out of range (0..{self.n_seq_max - 1}) in batch")
        if min(pos) < 0 or max(pos) >= self.n_ctx_seq:
            raise InvalidInputError(
                f"position out of range (0..{self.n_ctx_seq - 1}) in batch")

    # -- compute ----------------------------------------------------------------------------
    def decode(self, batch: Batch, wake_fd: int = -1, synchronize: bool = False) -> None:
        """Run the batch through the decoder. Releases the GIL for the whole computation.
        Raises DecodeAbortedError if interrupt() stopped it (see there). With `wake_fd` >= 0,
        one byte is written to that file descriptor first, without the GIL (an event loop's
        wake-up, service/engine/waker.py). With `synchronize`, the call also waits for the
        backend to finish (on CUDA llama_decode returns once the graph is queued) before it
        takes the GIL back (`launched` says when the decode call itself returned)."""
        self.check_batch(batch)
        decoding.interrupt_flag = self._interrupt
        try:
            # llama_decode, or for a context without memory llama_encode (interrupt.c)
            rc = int(lib.llama_grpc_decode_wake(self.ptr, batch.c_struct(), wake_fd,
                                                int(synchronize), self._launched))
        finally:
            decoding.interrupt_flag = None
        if rc != 0:
            raise decode_error(rc, "decode")

    @property
    def launched(self) -> tuple[float, float]:
        """When the last decode call returned, before any wait for the backend: perf_counter
        and the calling thread's thread_time, in seconds."""
        return float(self._launched[0]), float(self._launched[1])

    def allow_interrupt(self, allow: bool) -> None:
        """Let interrupt() stop decodes from now on, or not (which also withdraws a request
        not yet acted on). Call from the thread that decodes, between decodes."""
        lib.llama_grpc_allow_interrupt(self._interrupt, allow)

    def interrupt(self) -> bool:
        """Stop the decode running now, or the next one, early, if interrupts are allowed;
        whether they were. Safe from any thread. Where llama.cpp computes on the CPU it checks
        between graph nodes; the decode then raises DecodeAbortedError and the memory holds
        none of the stopped ubatch (earlier ubatches of the same batch stay). Other backends
        may finish the decode regardless. In force until allow_interrupt() is called again."""
        return bool(lib.llama_grpc_request_interrupt(self._interrupt))

    def encode(self, batch: Batch) -> None:
        self.check_batch(batch)
        rc = int(lib.llama_encode(self.ptr, batch.c_struct()))
        if rc != 0:
            raise decode_error(rc, "encode")

    def logits_ith(self, i: int) -> memoryview[float]:
        """Zero-copy float32 view of the logits of batch output i (-1: last). Valid until the
        next decode."""
        p = lib.llama_get_logits_ith(self.ptr, i)
        if p == ffi.NULL:
            raise InvalidInputError(f"no logits for batch index {i} (was it marked as output?)")
        return _floats(p, self.n_vocab)

    def embeddings_ith(self, i: int) -> memoryview[float]:
        p = lib.llama_get_embeddings_ith(self.ptr, i)
        if p == ffi.NULL:
            raise InvalidInputError(f"no embeddings for batch index {i}")
        return _floats(p, self.model.n_embd_out)

    def embeddings_seq(self, seq_id: int) -> memoryview[float]:
        """Pooled embedding of a sequence (or the rank score(s) for pooling 'rank')."""
        self.check_seq(seq_id)
        p = lib.llama_get_embeddings_seq(self.ptr, seq_id)
        if p == ffi.NULL:
            raise InvalidInputError(f"no pooled embeddings for sequence {seq_id}")
        n = max(self.model.n_cls_out, 1) if self.pooling == 4 else self.model.n_embd_out
        return _floats(p, n)

    def set_embeddings(self, on: bool) -> None:
        lib.llama_set_embeddings(self.ptr, on)

    def set_threads(self, n_threads: int, n_threads_batch: int) -> None:
        lib.llama_set_n_threads(self.ptr, n_threads, n_threads_batch)

    # -- KV memory --------------------------------------------------------------------------
    def memory_clear(self) -> None:
        lib.llama_memory_clear(self._mem, True)

    def seq_rm(self, seq_id: int, p0: int = -1, p1: int = -1) -> bool:
        """Remove positions [p0, p1) of a sequence (-1: open end; seq -1: every sequence)."""
        self.check_seq(seq_id, allow_all=True)
        return bool(lib.llama_memory_seq_rm(self._mem, seq_id, p0, p1))

    def seq_cp(self, src: int, dst: int, p0: int = -1, p1: int = -1) -> None:
        self.check_seq(src)
        self.check_seq(dst)
        lib.llama_memory_seq_cp(self._mem, src, dst, p0, p1)

    def seq_keep(self, seq_id: int) -> None:
        self.check_seq(seq_id)
        lib.llama_memory_seq_keep(self._mem, seq_id)

    def seq_add(self, seq_id: int, p0: int, p1: int, delta: int) -> None:
        """Shift positions [p0, p1) of a sequence by delta (the context-shift primitive)."""
        self.check_seq(seq_id)
        if not self.can_shift:
            raise InvalidInputError("this model's memory cannot shift positions")
        lib.llama_memory_seq_add(self._mem, seq_id, p0, p1, delta)

    def seq_div(self, seq_id: int, p0: int, p1: int, d: int) -> None:
        self.check_seq(seq_id)
        if d < 1:
            raise InvalidInputError("divisor must be >= 1")
        lib.llama_memory_seq_div(self._mem, seq_id, p0, p1, d)

    def seq_pos_min(self, seq_id: int) -> int:
        self.check_seq(seq_id)
        return int(lib.llama_memory_seq_pos_min(self._mem, seq_id))

    def seq_pos_max(self, seq_id: int) -> int:
        """Largest position stored for the sequence, -1 if it is empty."""
        self.check_seq(seq_id)
        return int(lib.llama_memory_seq_pos_max(self._mem, seq_id))

    @property
    def has_memory(self) -> bool:
        """Whether the context keeps a memory (KV cache): encoder-only models (BERT) have none,
        and llama.cpp then pools over one ubatch only."""
        return bool(self._mem != ffi.NULL)

    @property
    def can_shift(self) -> bool:
        return bool(lib.llama_memory_can_shift(self._mem))

    # -- per-sequence state -----------------------------------------------------------------
    def seq_state(self, seq_id: int) -> bytes:
        self.check_seq(seq_id)
        size = int(lib.llama_state_seq_get_size(self.ptr, seq_id))
        buf = ffi.new("uint8_t[]", size)
        n = int(lib.llama_state_seq_get_data(self.ptr, buf, size, seq_id))
        if n == 0 and size:
            raise StateError(f"could not read the state of sequence {seq_id}")
        return bytes(ffi.buffer(buf, n))

    def set_seq_state(self, data: bytes, seq_id: int) -> None:
        self.check_seq(seq_id)
        if int(lib.llama_state_seq_set_data(self.ptr, data, len(data), seq_id)) == 0:
            raise StateError(f"could not restore a state into sequence {seq_id}")

    def save_seq_file(self, path: str | os.PathLike[str], seq_id: int,
                      tokens: Sequence[int]) -> int:
        """Write a sequence's KV state and its tokens to a file; returns bytes written."""
        self.check_seq(seq_id)
        ids = self.model.vocab.check_tokens(tokens)
        src = ffi.new("llama_token[]", ids) if ids else ffi.NULL
        n = int(lib.llama_state_seq_save_file(self.ptr, os.fsencode(path), seq_id, src, len(ids)))
        if n == 0:
            raise StateError(f"could not save sequence {seq_id} to {path}")
        return n

    def load_seq_file(self, path: str | os.PathLike[str], seq_id: int) -> list[int]:
        """Restore a sequence from a file written by save_seq_file; returns its tokens."""
        self.check_seq(seq_id)
        if not Path(path).is_file():
            raise StateError(f"no such state file: {path}")
        cap = self.n_ctx_seq
        out = ffi.new("llama_token[]", cap)
        count = ffi.new("size_t *")
        n = int(lib.llama_state_seq_load_file(self.ptr, os.fsencode(path), seq_id, out, cap,
                                              count))
        if n == 0:
            raise StateError(f"could not restore {path} into sequence {seq_id} (wrong model, "
                             "too many tokens, or corrupt file)")
        return list(ffi.unpack(out, count[0]))

    # -- adapters and perf ------------------------------------------------------------------
    def set_lora_adapters(self, adapters: Sequence[tuple[LoraAdapter, float]]) -> None:
        """Replace the active LoRA adapters with these (adapter, scale) pairs."""
        ptrs = ffi.new("struct llama_adapter_lora *[]", [a.ptr for a, _ in adapters] or [ffi.NULL])
        scales = ffi.new("float[]", [float(s) for _, s in adapters] or [0.0])
        rc = int(lib.llama_set_adapters_lora(self.ptr, ptrs, len(adapters), scales))
        if rc != 0:
            raise ContextError(f"llama_set_adapters_lora failed (code {rc})")

    def perf(self) -> dict[str, float]:
        d = lib.llama_perf_context(self.ptr)
        return {"t_load_ms": d.t_load_ms, "t_p_eval_ms": d.t_p_eval_ms, "t_eval_ms": d.t_eval_ms,
                "n_p_eval": d.n_p_eval, "n_eval": d.n_eval, "n_reused": d.n_reused}

    def perf_reset(self) -> None:
        lib.llama_perf_context_reset(self.ptr)


def _floats(p: Any, n: int) -> memoryview[float]:
    """A zero-copy float32 view of n floats at p (numpy.asarray takes it as it is)."""
    return memoryview(ffi.buffer(p, n * 4)).cast("f")
