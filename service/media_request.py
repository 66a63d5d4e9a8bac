"""The media of a request, found and checked before the request is built: `image_data` with
its `[img-<id>]` references, `multimodal_data` (JSON prompt objects and TypedPrompt, with its
`<__media__>` markers), and chat `image_url` / `input_audio` / `input_video` parts (JSON
content and typed ContentParts).

Every item is decoded and checked (service.media) first, then the counts against the
placeholders, then whether the model takes that kind of media at all. No model does yet (the
engine does not carry media: issue 23), so a request with valid media ends in llama-server's
own error for a model without a projector: INVALID_ARGUMENT / HTTP 400, never ignored.
llama-server checks for a projector first; checking the media first here gives each bad input
its own reason (docs/multimodal.md)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

from api_common.media_uri import (
    MAX_MEDIA_BYTES,
    MediaTextError,
    audio_format_mime,
    decode_base64,
    parse_media_url,
)
from service.errors import ServiceError
from service.media import (
    AUDIO,
    IMAGE,
    MAX_MEDIA_ITEMS,
    MediaError,
    MediaInfo,
    inspect,
)
from service.prompt_values import value_to_json
from service.server_info import MEDIA_MARKER

Json = Any
_IMG_REF = re.compile(r"\[img-(-?\d+)\]")
_KIND_NAMES = {1: IMAGE, 2: AUDIO}  # llama.v1.MediaKind
NO_PROJECTOR = "Multimodal data provided, but model does not support multimodal requests."
_HINT = " input is not supported - hint: if this is unexpected, you may need to provide the mmproj"


@dataclass(frozen=True)
class Modalities:
    vision: bool = False
    audio: bool = False
    video: bool = False


def model_modalities(rt: Any) -> Modalities:
    """The media kinds the loaded model takes: its projector's (--mmproj), none without."""
    proj = getattr(rt, "projector", None)
    if proj is None:
        return Modalities()
    return Modalities(vision=proj.supports_vision, audio=proj.supports_audio)


@dataclass
class _Found:
    """Media met so far: (field, info) per item, with the running byte total."""
    items: list[tuple[str, MediaInfo]]
    total: int = 0
    data: list[bytes] = dc_field(default_factory=list)  # each item's bytes, in items' order

    def add(self, field: str, data: bytes, mime: str = "", kind: str = "") -> None:
        if len(self.items) >= MAX_MEDIA_ITEMS:
            raise ServiceError("invalid_argument", f"too many media items: at most "
                               f"{MAX_MEDIA_ITEMS} a request", field=field)
        self.total += len(data)
        if self.total > MAX_MEDIA_BYTES:
            raise ServiceError("invalid_argument", f"media too large: over {MAX_MEDIA_BYTES} "
                               "bytes in one request", field=field)
        try:
            self.items.append((field, inspect(data, mime, kind)))
            self.data.append(data)
        except MediaError as e:
            raise ServiceError("invalid_argument", f"{field}: {e}", field=field) from None

    def add_text(self, field: str, text: Json, url: bool, kind: str = "",
                 audio_format: Json = None) -> None:
        """An item given as text: a data URI or base64 (url), else base64 only."""
        if not isinstance(text, str):
            raise ServiceError("invalid_argument", f"{field} must hold the media as a string",
                               field=field)
        try:
            data, mime = (parse_media_url(text, self._room()) if url
                          else (decode_base64(text, self._room()), ""))
            if audio_format is not None and not mime:
                mime = audio_format_mime(audio_format)
        except MediaTextError as e:
            raise ServiceError("invalid_argument", f"{field}: {e}", field=field) from None
        self.add(field, data, mime, kind)

    def _room(self) -> int:
        return max(0, MAX_MEDIA_BYTES - self.total)


# The last request checked on this thread and its media: the servicer checks a request, then
# builds it on the same thread, and the build takes the media without decoding them again.
_last = threading.local()


def checked_media(rt: Any, request: Any) -> list[bytes]:
    """check_request_media's answer for `request`: remembered if this thread just checked
    this very message, else checked now."""
    if getattr(_last, "request", None) is request:
        data: list[bytes] = _last.data
        _last.request, _last.data = None, []  # the bytes are not kept past the build
        return data
    return check_request_media(rt, request)


def check_request_media(rt: Any, request: Any) -> list[bytes]:
    """Refuse a request whose media are bad, or that carries media the model cannot take; the
    media's bytes, in the order their markers come in the prompt (chat: message by message,
    part by part)."""
    found = _Found([])
    fields = request.DESCRIPTOR.fields_by_name
    texts: list[str] = []
    if "messages" in fields:
        _chat_media(request, found, texts)
    for name in ("prompt", "input", "content"):
        if name in fields and request.HasField(name):
            # The text only matters to image_data's [img-<id>]: a long token prompt is not
            # walked for it (~16 ms for 16,000 ids) unless there are images to match.
            _value_prompts(value_to_json(request, name), name, found,
                           texts if request.image_data else None)
    for name in ("typed_prompt", "typed_input"):
        if name in fields and request.HasField(name):
            _typed_prompts(getattr(request, name), name, found, texts)
    if "input_prefix" in fields:  # infill: its text is placeholders' text too
        texts += [request.input_prefix, request.input_suffix,
                  *(chunk.text for chunk in request.input_extra)]
    _image_data(request, found, texts)
    if found.items:
        _check_capability(model_modalities(rt), found.items, chat="messages" in fields)
    # Kept only for a chat build to take (the one that reads them back, with a projector).
    keep = found.data and "messages" in fields and model_modalities(rt) != Modalities()
    _last.request, _last.data = (request, found.data) if keep else (None, [])
    return found.data


def _check_capability(caps: Modalities, items: list[tuple[str, MediaInfo]], chat: bool) -> None:
    for field, info in items:
        if (info.kind == IMAGE and caps.vision) or (info.kind == AUDIO and caps.audio):
            continue
        message = (("image" if info.kind == IMAGE else "audio") + _HINT) if chat \
            else NO_PROJECTOR
        raise ServiceError("invalid_argument", message, field=field)


def _image_data(request: Any, found: _Found, texts: list[str]) -> None:
    """`image_data`: ids unique, each referenced by one `[img-<id>]` of the prompt text."""
    if not request.image_data:
        return
    ids: list[int] = []
    for i, image in enumerate(request.image_data):
        field = f"image_data[{i}]"
        if image.id in ids:
            raise ServiceError("invalid_argument", f"{field}: id {image.id} is given twice",
                               field="image_data")
        ids.append(image.id)
        found.add(field, bytes(image.data), image.mime_type, IMAGE)
    refs = [int(m) for text in texts for m in _IMG_REF.findall(text)]
    missing = sorted({r for r in refs if r not in ids})
    if missing:
        raise ServiceError("invalid_argument", f"[img-{missing[0]}] names no image of "
                           f"image_data (ids: {', '.join(map(str, ids))})", field="image_data")
    if len(refs) != len(ids):
        unused = [i for i in ids if i not in refs]
        detail = (f"image_data id {unused[0]} is not referenced as [img-{unused[0]}]"
                  if unused else "an image is referenced more than once")
        raise ServiceError("invalid_argument", f"{len(refs)} [img-<id>] placeholders for "
                           f"{len(ids)} images: {detail}", field="image_data")


def _markers(field: str, text: str, n_media: int) -> None:
    n_markers = text.count(MEDIA_MARKER)
    if n_markers != n_media:
        raise ServiceError("invalid_argument", f"{field}: {n_markers} {MEDIA_MARKER} markers "
                           f"for {n_media} media items; each item needs one marker",
                           field=field)


def _strings(value: Json) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict) and "prompt_string" in value:
        yield from _strings(value["prompt_string"])


def _value_prompts(value: Json, name: str, found: _Found, texts: list[str] | None) -> None:
    """A JSON prompt (or embedding input): its text (into `texts`, unless None), and each
    `{"prompt_string", "multimodal_data"}` object's media against its markers."""
    if texts is not None:
        texts.extend(_strings(value))
    if isinstance(value, dict):
        objects = [(name, value)]
    elif isinstance(value, list) and dict in map(type, value):
        objects = [(f"{name}[{i}]", v) for i, v in enumerate(value) if isinstance(v, dict)]
    else:
        return
    for where, obj in objects:
        if "multimodal_data" not in obj:
            continue
        field = f"{where}.multimodal_data"
        media = obj["multimodal_data"]
        if not isinstance(media, list):
            raise ServiceError("invalid_argument", f"{field} must be an array of base64 "
                               "strings", field=field)
        for j, item in enumerate(media):
            found.add_text(f"{field}[{j}]", item, url=False)
        _markers(field, "".join(_strings(obj.get("prompt_string"))), len(media))


def _typed_prompts(prompts: Any, name: str, found: _Found, texts: list[str]) -> None:
    for i, prompt in enumerate(prompts.prompts):
        text = "".join(p.text for p in prompt.pieces if p.HasField("text"))
        texts.append(text)
        field = f"{name}.prompts[{i}]"
        if prompt.multimodal_data and prompt.media:
            raise ServiceError("invalid_argument", f"{field}: set multimodal_data or media, "
                               "not both", field=field)
        for j, data in enumerate(prompt.multimodal_data):
            found.add(f"{field}.multimodal_data[{j}]", bytes(data))
        for j, media in enumerate(prompt.media):
            found.add(f"{field}.media[{j}]", bytes(media.data), media.mime_type,
                      _KIND_NAMES.get(media.kind, ""))
        if prompt.multimodal_data or prompt.media:
            _markers(field, text, len(prompt.multimodal_data) + len(prompt.media))


def _chat_media(request: Any, found: _Found, texts: list[str]) -> None:
    need_text = bool(request.image_data)  # string contents matter to [img-<id>] only
    for i, message in enumerate(request.messages):
        which = message.WhichOneof("content_input")
        if which == "content_parts":
            for j, part in enumerate(message.content_parts.parts):
                _typed_part(part, f"messages[{i}].content[{j}]", found, texts)
        elif which == "content":
            content = message.content
            kind = content.WhichOneof("kind")
            if kind == "string_value":
                if need_text:
                    texts.append(content.string_value)
            elif kind == "list_value":
                for j, part in enumerate(value_to_json(message, "content")):
                    if isinstance(part, dict):
                        _json_part(part, f"messages[{i}].content[{j}]", found, texts)


def _json_part(part: dict[str, Json], field: str, found: _Found, texts: list[str]) -> None:
    kind = part.get("type")
    if kind == "text" and isinstance(part.get("text"), str):
        texts.append(part["text"])
    elif kind == "image_url":
        inner = part.get("image_url")
        url = inner.get("url") if isinstance(inner, dict) else None
        found.add_text(f"{field}.image_url", url, url=True, kind=IMAGE)
    elif kind == "input_audio":
        inner = part.get("input_audio")
        inner = inner if isinstance(inner, dict) else {}
        data = inner.get("data", inner.get("url"))
        found.add_text(f"{field}.input_audio", data, url=True, kind=AUDIO,
                       audio_format=inner.get("format"))
    elif kind in ("input_video", "video_url"):
        raise ServiceError("invalid_argument", "video" + _HINT, field=field)


def _typed_part(part: Any, field: str, found: _Found, texts: list[str]) -> None:
    if part.type == "text":
        texts.append(part.text)
        return
    if part.type in ("input_video", "video_url"):
        raise ServiceError("invalid_argument", "video" + _HINT, field=field)
    if part.type not in ("image_url", "input_audio"):
        return  # the template's parser names the unknown type
    kind = IMAGE if part.type == "image_url" else AUDIO
    text = part.image_url.url if kind == IMAGE else (part.input_audio.data
                                                     or part.input_audio.url)
    if part.HasField("media"):
        if text:
            raise ServiceError("invalid_argument", f"{field}: set media or the "
                               f"{part.type} text, not both", field=field)
        # Named as the part's image_url / input_audio, which media stands for (the REST
        # bridge puts a JSON part's data here: its client knows no `media`).
        declared = _KIND_NAMES.get(part.media.kind, kind)
        if declared != kind:
            raise ServiceError("invalid_argument", f"{field}: an {part.type} part's media "
                               f"must be {kind}, not {declared}", field=field)
        found.add(f"{field}.{part.type}", bytes(part.media.data), part.media.mime_type, kind)
        return
    fmt = part.input_audio.format if kind == AUDIO and part.input_audio.HasField("format") \
        else None
    found.add_text(f"{field}.{part.type}", text, url=True, kind=kind, audio_format=fmt)
