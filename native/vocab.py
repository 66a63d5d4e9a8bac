"""A model's vocabulary: tokenize, pieces and detokenize as raw bytes (never lossy), token facts."""

from __future__ import annotations

import operator
from collections.abc import Iterable
from typing import Any

from native._ffi import ffi, lib
from native.errors import InvalidInputError, TokenizeError


class Vocab:
    """Borrowed from its Model (which it keeps alive); all methods validate token ids first."""

    def __init__(self, ptr: Any, owner: object) -> None:
        self._ptr = ptr
        self._owner = owner  # keeps the model (and so this pointer) alive
        self.n_tokens = int(lib.llama_vocab_n_tokens(ptr))
        # Pieces by token id: [without special tokens' text, with it] (llama_token_to_piece's
        # `special`), filled as tokens are first seen.
        self._pieces: tuple[dict[int, bytes], dict[int, bytes]] = ({}, {})

    # -- special tokens (-1 where the vocabulary has none) ----------------------------------
    @property
    def bos(self) -> int:
        return int(lib.llama_vocab_bos(self._ptr))

    @property
    def eos(self) -> int:
        return int(lib.llama_vocab_eos(self._ptr))

    @property
    def eot(self) -> int:
        return int(lib.llama_vocab_eot(self._ptr))

    @property
    def sep(self) -> int:
        return int(lib.llama_vocab_sep(self._ptr))

    @property
    def nl(self) -> int:
        return int(lib.llama_vocab_nl(self._ptr))

    @property
    def pad(self) -> int:
        return int(lib.llama_vocab_pad(self._ptr))

    @property
    def add_bos(self) -> bool:
        return bool(lib.llama_vocab_get_add_bos(self._ptr))

    @property
    def add_eos(self) -> bool:
        return bool(lib.llama_vocab_get_add_eos(self._ptr))

    @property
    def add_sep(self) -> bool:
        return bool(lib.llama_vocab_get_add_sep(self._ptr))

    def fim_tokens(self) -> dict[str, int]:
        """Fill-in-the-middle tokens (pre, suf, mid, pad, rep, sep); -1 where absent."""
        v = self._ptr
        return {
            "pre": int(lib.llama_vocab_fim_pre(v)), "suf": int(lib.llama_vocab_fim_suf(v)),
            "mid": int(lib.llama_vocab_fim_mid(v)), "pad": int(lib.llama_vocab_fim_pad(v)),
            "rep": int(lib.llama_vocab_fim_rep(v)), "sep": int(lib.llama_vocab_fim_sep(v)),
        }

    @property
    def type(self) -> int:
        return int(lib.llama_vocab_type(self._ptr))

    # -- validation -------------------------------------------------------------------------
    def check_token(self, token: int) -> None:
        if not 0 <= token < self.n_tokens:
            raise InvalidInputError(
                f"token id {token} is outside the vocabulary (0..{self.n_tokens - 1})")

    def check_tokens(self, tokens: Iterable[int]) -> list[int]:
        """The tokens as a list of ints, after checking every id is inside the vocabulary."""
        try:
            ids = list(map(operator.index, tokens))
        except TypeError:
            raise InvalidInputError("tokens must be a flat sequence of integers") from None
        self.check_ids(ids)
        return ids

    def check_ids(self, ids: list[int]) -> None:
        """Check that every id of a list of ints is inside the vocabulary."""
        if ids and (min(ids) < 0 or max(ids) >= self.n_tokens):
            first = next(t for t in ids if not 0 <= t < self.n_tokens)
            raise InvalidInputError(
                f"token id {first} is outside the vocabulary (0..{self.n_tokens - 1})")

    # -- per-token facts --------------------------------------------------------------------
    def text(self, token: int) -> bytes:
        self.check_token(token)
        return bytes(ffi.string(lib.llama_vocab_get_text(self._ptr, token)))

    def score(self, token: int) -> float:
        self.check_token(token)
        return float(lib.llama_vocab_get_score(self._ptr, token))

    def attr(self, token: int) -> int:
        self.check_token(token)
        return int(lib.llama_vocab_get_attr(self._ptr, token))

    def is_eog(self, token: int) -> bool:
        self.check_token(token)
        return bool(lib.llama_vocab_is_eog(self._ptr, token))

    def is_control(self, token: int) -> bool:
        self.check_token(token)
        return bool(lib.llama_vocab_is_control(self._ptr, token))

    def eog_tokens(self) -> frozenset[int]:
        """Every end-of-generation token (EOS, EOT, <|eom_id|>, ...), computed once per call."""
        return frozenset(t for t in range(self.n_tokens) if lib.llama_vocab_is_eog(self._ptr, t))

    # -- text <-> tokens --------------------------------------------------------------------
    def tokenize(self, text: str | bytes, add_special: bool = True,
                 parse_special: bool = False) -> list[int]:
        data = text.encode("utf-8") if isinstance(text, str) else text
        if len(data) > 2**31 - 16:
            raise InvalidInputError("text too long to tokenize")
        cap = len(data) + 8
        while True:
            buf = ffi.new("llama_token[]", cap)
            n = int(lib.llama_tokenize(self._ptr, data, len(data), buf, cap,
                                       add_special, parse_special))
            if n >= 0:
                return list(ffi.unpack(buf, n))
            if n == -(2**31):
                raise TokenizeError("tokenization overflowed int32")
            cap = -n

    def token_to_piece(self, token: int, special: bool = True) -> bytes:
        """The token's bytes (possibly part of a UTF-8 character); cached per token."""
        cache = self._pieces[special]
        piece = cache.get(token)
        if piece is None:
            self.check_token(token)
            piece = cache[token] = self._piece_uncached(token, special)
        return piece

    def _piece_uncached(self, token: int, special: bool) -> bytes:
        cap = 32
        while True:
            buf = ffi.new("char[]", cap)
            n = int(lib.llama_token_to_piece(self._ptr, token, buf, cap, 0, special))
            if n >= 0:
                return bytes(ffi.buffer(buf, n))
            cap = -n

    def detokenize(self, tokens: Iterable[int], special: bool = True) -> bytes:
        """The tokens' pieces joined: exact bytes, as llama-server's /detokenize returns them.

        Unlike llama_detokenize (see detokenize_native) this applies no model-specific clean-up
        of spaces, so detokenize(tokenize(x)) == x for byte-level BPE vocabularies.
        """
        ids = self.check_tokens(tokens)
        cache = self._pieces[special]
        try:  # every piece seen before, the usual case: one dict lookup per token
            return b"".join([cache[t] for t in ids])
        except KeyError:
            return b"".join([self.token_to_piece(t, special) for t in ids])

    def detokenize_native(self, tokens: Iterable[int], remove_special: bool = False,
                          unparse_special: bool = True) -> bytes:
        """llama_detokenize: includes the vocabulary's own clean-up (e.g. " ?" -> "?")."""
        ids = self.check_tokens(tokens)
        if not ids:
            return b""
        src = ffi.new("llama_token[]", ids)
        cap = max(16, len(ids) * 8)
        while True:
            buf = ffi.new("char[]", cap)
            n = int(lib.llama_detokenize(self._ptr, src, len(ids), buf, cap,
                                         remove_special, unparse_special))
            if n >= 0:
                return bytes(ffi.buffer(buf, n))
            cap = -n
