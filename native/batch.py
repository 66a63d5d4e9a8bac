"""A reusable llama_batch whose arrays Python fills a slice at a time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from native._ffi import ffi
from native.errors import InvalidInputError


class Batch:
    """Token batch of fixed capacity, one sequence id per token.

    The memory is owned by Python: `tokens`, `pos`, `seq_id` and `logits` are the cffi arrays
    that the llama_batch points into, filled a slice at a time (a C loop, not one Python
    assignment per token).
    """

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise InvalidInputError("batch capacity must be positive")
        self.capacity = capacity
        self.n_tokens = 0
        self.tokens: Any = ffi.new("llama_token[]", capacity)
        self.pos: Any = ffi.new("llama_pos[]", capacity)
        self.seq_id: Any = ffi.new("llama_seq_id[]", capacity)
        self.logits: Any = ffi.new("int8_t[]", capacity)
        self._n_seq_id = ffi.new("int32_t[]", [1] * capacity)
        self._seq_ptrs = ffi.new("llama_seq_id *[]", [self.seq_id + i for i in range(capacity)])
        self._struct = ffi.new("llama_batch *")
        self._struct.token = self.tokens
        self._struct.embd = ffi.NULL
        self._struct.pos = self.pos
        self._struct.n_seq_id = self._n_seq_id
        self._struct.seq_id = self._seq_ptrs
        self._struct.logits = self.logits

    def clear(self) -> None:
        self.n_tokens = 0

    @property
    def free(self) -> int:
        return self.capacity - self.n_tokens

    def add(self, token: int, pos: int, seq_id: int, output: bool) -> int:
        """Append one token; returns its index in the batch (where its logits will be)."""
        i = self.n_tokens
        if i >= self.capacity:
            raise InvalidInputError("batch is full")
        self.tokens[i] = token
        self.pos[i] = pos
        self.seq_id[i] = seq_id
        self.logits[i] = output
        self.n_tokens = i + 1
        return i

    def add_sequence(self, tokens: Sequence[int], pos0: int, seq_id: int,
                     output_last: bool) -> int:
        """Append consecutive tokens of one sequence from position pos0; returns the last index."""
        n = len(tokens)
        i = self.n_tokens
        if n == 0:
            raise InvalidInputError("empty token run")
        if i + n > self.capacity:
            raise InvalidInputError(f"batch overflow: {i + n} > capacity {self.capacity}")
        self.tokens[i:i + n] = tokens
        self.pos[i:i + n] = range(pos0, pos0 + n)
        self.seq_id[i:i + n] = [seq_id] * n
        ffi.memmove(self.logits + i, bytes(n), n)
        if output_last:
            self.logits[i + n - 1] = 1
        self.n_tokens = i + n
        return i + n - 1

    def set_all_outputs(self, value: bool) -> None:
        ffi.memmove(self.logits, (b"\x01" if value else b"\x00") * self.n_tokens, self.n_tokens)

    def c_struct(self) -> Any:
        """The llama_batch to pass by value, describing the first n_tokens entries."""
        self._struct.n_tokens = self.n_tokens
        return self._struct[0]
