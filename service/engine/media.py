"""Media in a prompt (issue 23): pure logic the scheduler and the engine share.

A medium (an image or audio clip) is a run of embeddings, not of token ids. In a request's
prompt, and so in the slot's cached tokens, it stands as `n_tokens` placeholder ids derived
from the hash of its bytes: negative, so never a vocabulary id, and the same for the same
medium, so a prompt-cache prefix matches up to the first medium that differs (and
`tokens_cached` counts a reused medium). The embeddings themselves travel beside the prompt, in
a MediaSpan, encoded once per request before the engine sees it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

# Placeholder ids stay within int32 (slot files store cached tokens as llama_token).
_ID_SPACE = 1 << 31


def media_ids(digest: bytes, n_tokens: int) -> list[int]:
    """The placeholder ids of a medium whose hash is `digest`: -1 - ((base + i) mod 2^31).

    Equal media give equal runs; two different media agree at a position only if their
    31-bit bases collide."""
    base = int.from_bytes(digest[:4], "big")
    return [-1 - ((base + i) % _ID_SPACE) for i in range(n_tokens)]


@dataclass(frozen=True, eq=False)
class MediaSpan:
    """A medium at prompt[start:start + n_tokens], with its embeddings (n_tokens, n_embd)."""

    start: int
    n_tokens: int
    embd: Any = field(repr=False)  # numpy float32 array
    non_causal: bool = False  # decoded with non-causal attention (the projector says)
    kind: str = "image"

    @property
    def end(self) -> int:
        return self.start + self.n_tokens


def span_at(spans: Sequence[MediaSpan], pos: int) -> MediaSpan | None:
    """The span starting at prompt position `pos`, if any."""
    for s in spans:
        if s.start == pos:
            return s
    return None


def text_run(spans: Sequence[MediaSpan], pos: int, n: int) -> int:
    """How many of the `n` prompt tokens from `pos` are text before the next medium."""
    for s in spans:
        if pos < s.start < pos + n:
            return s.start - pos
    return n


def whole_prefix(spans: Sequence[MediaSpan], n: int) -> int:
    """`n` cut back so that a cached prefix never ends inside a medium."""
    for s in spans:
        if s.start < n < s.end:
            return s.start
    return n
