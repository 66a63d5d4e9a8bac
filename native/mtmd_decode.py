"""Decode a media chunk's embeddings (native.mtmd's Projector.encode) into a llama_context.

    n_past = decode_embeddings(ctx, embd, n_past, seq_id, non_causal=chunk.non_causal)
    n_past += chunk.n_pos - chunk.n_tokens   # only M-RoPE chunks take fewer positions

The batch is a llama_batch with `embd` set and `token` NULL, its arrays owned by Python (as
native.batch's token batch), split into slices of at most the context's n_batch, as libmtmd's
mtmd_helper_decode_image_chunk does. Every argument is checked first: llama_decode aborts the
process on some invalid batches.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from native._ffi import decoding, ffi, lib
from native.context import Context
from native.errors import InvalidInputError, decode_error


def _check(ctx: Context, embd: np.ndarray, pos0: int, seq_id: int,
           mrope_positions: np.ndarray | None) -> int:
    n_embd = int(lib.llama_model_n_embd_inp(ctx.model.ptr))
    if not isinstance(embd, np.ndarray) or embd.ndim != 2 or embd.dtype != np.float32:
        raise InvalidInputError("embeddings must be a float32 array (n_tokens, n_embd)")
    n = int(embd.shape[0])
    if n == 0 or embd.shape[1] != n_embd:
        raise InvalidInputError(f"embeddings of shape {embd.shape}; the model takes "
                                f"(n >= 1, {n_embd})")
    if not np.isfinite(embd).all():
        raise InvalidInputError("embeddings hold NaN or infinite values")
    ctx.check_seq(seq_id)
    if mrope_positions is None:
        last = pos0 + n - 1
    else:
        if mrope_positions.shape != (n, 4):
            raise InvalidInputError(f"M-RoPE positions must be ({n}, 4), "
                                    f"not {mrope_positions.shape}")
        last = int(mrope_positions[:, :3].max())
        if int(mrope_positions.min()) < 0:
            raise InvalidInputError("negative M-RoPE position")
    if pos0 < 0 or last >= ctx.n_ctx_seq:
        raise InvalidInputError(f"positions {pos0}..{last} outside the context "
                                f"(0..{ctx.n_ctx_seq - 1})")
    return n


def decode_embeddings(ctx: Context, embd: np.ndarray, pos0: int, seq_id: int, *,
                      non_causal: bool = False, mrope_positions: np.ndarray | None = None,
                      logits_last: bool = False) -> int:
    """Decode `embd` (float32, n_tokens x the model's n_embd) into sequence `seq_id` from
    position pos0; returns pos0 + n_tokens. `non_causal` (MediaChunk.non_causal) switches the
    context to non-causal attention for the chunk, which then must fit one ubatch; `logits_last`
    asks for the last embedding's logits (a prompt that ends with a medium).
    `mrope_positions`: MediaChunk.decoder_positions(pos0) for M-RoPE text models."""
    n = _check(ctx, embd, pos0, seq_id, mrope_positions)
    if non_causal and n > ctx.n_ubatch:
        raise InvalidInputError(f"a non-causal medium of {n} embeddings needs n_ubatch >= {n} "
                                f"(the context has {ctx.n_ubatch})")
    n_pos_per = 1 if mrope_positions is None else 4
    data = np.ascontiguousarray(embd)
    if mrope_positions is None:
        pos_all = np.arange(pos0, pos0 + n, dtype=np.int32)
    else:  # llama.cpp wants M-RoPE positions section-major: all t, then all x, y, z
        pos_all = np.ascontiguousarray(mrope_positions.astype(np.int32).T)
    step = ctx.n_batch
    if non_causal:
        lib.llama_set_causal_attn(ctx.ptr, False)
    try:
        for start in range(0, n, step):
            count = min(step, n - start)
            last = logits_last and start + count == n
            _decode_slice(ctx, data[start:start + count], pos_all, start, count, n_pos_per,
                          seq_id, last)
    finally:
        if non_causal:
            lib.llama_set_causal_attn(ctx.ptr, True)
    return pos0 + n


def _decode_slice(ctx: Context, embd: np.ndarray, pos_all: np.ndarray, start: int, count: int,
                  n_pos_per: int, seq_id: int, logits_last: bool) -> None:
    keep: list[Any] = []  # every cffi array the batch points into, alive until the decode ends
    embd_buf = ffi.from_buffer("float[]", embd)
    if n_pos_per == 1:
        pos = ffi.new("llama_pos[]", pos_all[start:start + count].tolist())
    else:
        rows = pos_all.reshape(n_pos_per, -1)[:, start:start + count]
        pos = ffi.new("llama_pos[]", rows.reshape(-1).tolist())
    seq = ffi.new("llama_seq_id[]", [seq_id] * count)
    seq_ptrs = ffi.new("llama_seq_id *[]", [seq + i for i in range(count)])
    n_seq = ffi.new("int32_t[]", [1] * count)
    logits = ffi.new("int8_t[]", count)
    if logits_last:
        logits[count - 1] = 1
    keep += [embd_buf, pos, seq, seq_ptrs, n_seq, logits]
    batch = ffi.new("llama_batch *", {"n_tokens": count, "token": ffi.NULL, "embd": embd_buf,
                                      "pos": pos, "n_seq_id": n_seq, "seq_id": seq_ptrs,
                                      "logits": logits})
    decoding.interrupt_flag = ctx._interrupt
    try:
        rc = int(lib.llama_decode(ctx.ptr, batch[0]))
    finally:
        decoding.interrupt_flag = None
    del keep
    if rc != 0:
        raise decode_error(rc, "decode")
