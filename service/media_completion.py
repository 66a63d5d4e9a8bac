"""Media in /completion, /v1/completions and /embedding prompts (issue 23), with a projector
loaded: llama-server's `{"prompt_string", "multimodal_data"}` objects (one `<__media__>` marker
per item), typed prompts with `multimodal_data` or `media`, and `image_data` with its
`[img-<id>]` placeholders (each placeholder becomes a marker, its image the medium there).

service.media_request checked every item, count and reference before; these build the prompts
(service/media_prompt.py). None means the request has no media: the text path builds it.
"""

from __future__ import annotations

import re
from typing import Any

from api_common.media_uri import MAX_MEDIA_BYTES, decode_base64
from service.engine.media import MediaSpan
from service.engine.params import ParamError
from service.media_prompt import media_prompt
from service.prompts import Json, tokenize_prompt
from service.server_info import MEDIA_MARKER

_IMG_REF = re.compile(r"\[img-(-?\d+)\]")
Prompts = tuple[list[list[int]], tuple[tuple[MediaSpan, ...], ...]]


def _has_media(request: Any, typed: str) -> bool:
    if request.image_data:
        return True
    if request.HasField(typed):
        return any(tp.media or tp.multimodal_data for tp in getattr(request, typed).prompts)
    return True  # a JSON prompt: its objects are looked at one by one


def _typed_entries(request: Any, typed: str) -> list[tuple[Json, list[bytes]]]:
    entries: list[tuple[Json, list[bytes]]] = []
    for i, tp in enumerate(getattr(request, typed).prompts):
        media = [bytes(d) for d in tp.multimodal_data] + [bytes(m.data) for m in tp.media]
        if media and not all(p.HasField("text") for p in tp.pieces):
            raise ParamError(f"{typed}.prompts[{i}]: a prompt with media is text only (its "
                             "markers split it); token pieces cannot be mixed in",
                             field=typed)
        parts: list[Json] = [p.text if p.HasField("text") else list(p.tokens.ids)
                             for p in tp.pieces]
        text_only = all(isinstance(p, str) for p in parts)
        entries.append(("".join(parts) if text_only else _flat(parts), media))
    return entries


def _flat(parts: list[Json]) -> list[Json]:
    out: list[Json] = []
    for p in parts:
        out.extend(p if isinstance(p, list) else [p])
    return out


def _object_entry(obj: Json, field: str) -> tuple[Json, list[bytes]]:
    if not isinstance(obj, dict) or "multimodal_data" not in obj:
        return obj, []
    text = obj.get("prompt_string")
    if not isinstance(text, str):
        raise ParamError(f"{field}: with multimodal_data, prompt_string must be a string",
                         field=field)
    return text, [decode_base64(item, MAX_MEDIA_BYTES) for item in obj["multimodal_data"]]


def _with_images(entry: Json, media: list[bytes], images: dict[int, bytes]
                 ) -> tuple[Json, list[bytes]]:
    """image_data: each [img-<id>] of a text prompt becomes a marker, its image the medium."""
    if not images or not isinstance(entry, str) or not _IMG_REF.search(entry):
        return entry, media
    if media:
        raise ParamError("a prompt takes multimodal_data or image_data, not both",
                         field="image_data")
    refs = [images[int(m)] for m in _IMG_REF.findall(entry)]
    return _IMG_REF.sub(lambda _: MEDIA_MARKER, entry), refs


def _build(rt: Any, entries: list[tuple[Json, list[bytes]]], field: str,
           add_special: bool = True) -> Prompts:
    prompts: list[list[int]] = []
    spans: list[tuple[MediaSpan, ...]] = []
    for entry, media in entries:
        if media:
            tokens, found = media_prompt(rt, entry, media, field)
        else:
            tokens, found = tokenize_prompt(entry, rt.model.vocab, add_special=add_special), ()
        prompts.append(tokens)
        spans.append(found)
    return prompts, tuple(spans)


def _media_entries(rt: Any, request: Any, typed: str, raw: list[Json], field: str
                   ) -> list[Any] | None:
    """The request's entries (its `typed` field's, else the JSON `raw` ones under `field`)
    with their media and image_data's images; None when none carries media."""
    if rt.projector is None or not _has_media(request, typed):
        return None
    images = {img.id: bytes(img.data) for img in request.image_data}
    if request.HasField(typed):
        pairs = _typed_entries(request, typed)
    else:
        pairs = [_object_entry(e, field) for e in raw]
    pairs = [_with_images(e, m, images) for e, m in pairs]
    return pairs if any(m for _, m in pairs) else None


def completion_media_prompts(rt: Any, request: Any, prompts_json: list[Json] | None
                             ) -> Prompts | None:
    """A CompletionRequest's prompts with their media; None without media (or projector)."""
    entries = _media_entries(rt, request, "typed_prompt", prompts_json or [], "prompt")
    return None if entries is None else _build(rt, entries, "prompt")


def embedding_media_inputs(rt: Any, request: Any, entries: list[Json], splittable: bool
                           ) -> Prompts | None:
    """An EmbedRequest's inputs with their media; None without media (or projector)."""
    pairs = _media_entries(rt, request, "typed_input", entries, "input")
    if pairs is None:
        return None
    if not splittable and not rt.ctx.has_memory:  # a medium is decoded apart from the text
        raise ParamError("inputs with media need a model that keeps a memory (its media are "
                         "decoded apart from its text)", field="input")
    built = _build(rt, pairs, "input")
    if not splittable:
        _check_pooled_tail(*built)
    return built


def _check_pooled_tail(prompts: list[list[int]], spans: tuple[tuple[MediaSpan, ...], ...]
                       ) -> None:
    """Pooling mean, cls or none with media: as the pinned llama-server, the media are decoded
    apart and the input's last text run, in one decode, gives the pooled result; an input
    whose last piece is a medium has no such run (llama-server returns nothing for it)."""
    for i, (tokens, found) in enumerate(zip(prompts, spans, strict=True)):
        if found and found[-1].end == len(tokens):
            raise ParamError(f"input {i} ends with a medium: with this pooling the result is "
                             "pooled over the text after the last medium (llama-server's "
                             "rule); put text after its marker, or use --pooling last",
                             field="input")
