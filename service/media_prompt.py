"""A prompt with media, made with the projector (--mmproj): its text split at the media
markers by libmtmd, text chunks as token ids, each medium as placeholder ids derived from its
bytes' hash (service/engine/media.py) with its embeddings encoded here, once per request and off
the event loop and the engine thread (the request is built on the worker pool)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from native import LlamaError
from native.media_probe import MediaError
from service.engine.media import MediaSpan, media_ids
from service.errors import ServiceError, context_overflow
from service.limits import check_prompt_text

if TYPE_CHECKING:  # imported where used: native.mtmd loads numpy (service/runtime.py)
    from native.mtmd import MediaChunk

MediaPrompt = tuple[list[int], tuple[MediaSpan, ...]]


def _refuse(message: str, field: str = "") -> ServiceError:
    return ServiceError("invalid_argument", message, field=field or None)


def _digests(media: Sequence[bytes], n_chunks: int) -> list[bytes]:
    """A hash per media chunk: its medium's, when each medium is one chunk (every projector
    but those that slice an image into several chunks); else one of every medium so far and
    the chunk's index (different media still differ, equal ones match less often)."""
    own = [hashlib.sha256(m).digest() for m in media]
    if n_chunks == len(media):
        return own
    joined = b"".join(own)
    return [hashlib.sha256(joined + i.to_bytes(4, "big")).digest() for i in range(n_chunks)]


def media_prompt(rt: Any, text: str, media: Sequence[bytes], field: str = "") -> MediaPrompt:
    """`text` (with one media marker per item of `media`, in order) as prompt ids and spans.

    Raises ServiceError (INVALID_ARGUMENT) for media the projector cannot decode, a prompt
    longer than a slot, a medium too large for one ubatch where it needs non-causal attention.
    A prompt may end with a medium: its last embedding's logits give the first token
    (service/engine/media_step.py)."""
    from native.mtmd import MediaChunk, TextChunk

    proj = rt.projector
    check_prompt_text(text)
    try:
        bitmaps = [proj.bitmap(m) for m in media]
        chunks = proj.tokenize(text, bitmaps, add_special=True, parse_special=True)
    except (MediaError, LlamaError) as e:
        raise _refuse(f"{field + ': ' if field else ''}{e}", field) from None
    n_media = sum(1 for c in chunks if isinstance(c, MediaChunk))
    digests = iter(_digests(media, n_media))
    tokens: list[int] = []
    pending: list[tuple[int, MediaChunk]] = []
    for chunk in chunks:
        if isinstance(chunk, TextChunk):
            tokens.extend(chunk.tokens)
            continue
        if chunk.non_causal and chunk.n_tokens > rt.ctx.n_ubatch:
            raise _refuse(f"an {chunk.kind} of {chunk.n_tokens} tokens needs --ubatch-size "
                          f">= {chunk.n_tokens} (it is decoded in one ubatch)", field)
        pending.append((len(tokens), chunk))
        tokens.extend(media_ids(next(digests), chunk.n_tokens))
    n_ctx = rt.engine.n_ctx_slot
    if len(tokens) >= n_ctx:  # before encoding: the costly part
        raise context_overflow(len(tokens), n_ctx)
    spans = []
    for start, chunk in pending:
        try:
            embd = proj.encode(chunk)
        except LlamaError as e:
            raise ServiceError("internal", f"encoding the {chunk.kind} failed: {e}") from None
        spans.append(MediaSpan(start, chunk.n_tokens, embd, chunk.non_causal, chunk.kind))
    return tokens, tuple(spans)
