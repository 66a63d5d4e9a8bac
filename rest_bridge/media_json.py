"""Media in a JSON body, mapped into the typed fields before the body becomes a message:
chat `image_url` / `input_audio` parts into typed `content_parts` (`ContentPart.media`: the
bytes, the data URI's or `format`'s MIME type, the kind); `image_data`'s base64 checked in
place (its `data` is a bytes field already). A `{"prompt_string", "multimodal_data"}` prompt
stays a google.protobuf.Value, which the service reads with these same checks (typing it
would name fields the client never sent in the service's errors).

Text that holds no media the server takes is a 400 here, in llama-server's error shape and in
the service's words (api_common.media_uri, shared): corrupt or truncated base64, a data URI
without base64, an unknown MIME type, a remote URL (nothing is fetched). What the bytes are
(format, size, placeholders) is the service's to check (service/media.py), the same for
every front door. Bodies without media are returned as they came, at the cost of a look at
their keys."""

from __future__ import annotations

import base64
from typing import Any

from google.protobuf.message import Message

from api_common.media_uri import (
    MAX_MEDIA_BYTES,
    MediaTextError,
    audio_format_mime,
    decode_base64,
    parse_media_url,
)
from rest_bridge.errors import BridgeError

Json = Any
_MEDIA_PARTS = {"image_url": "MEDIA_KIND_IMAGE", "input_audio": "MEDIA_KIND_AUDIO"}


def map_media(body: dict[str, Json], message: Message) -> dict[str, Json]:
    """The body with its media in the typed fields (a copy where anything changed)."""
    fields = message.DESCRIPTOR.fields_by_name
    if isinstance(body.get("image_data"), list) and "image_data" in fields:
        _check_image_data(body["image_data"])
    if isinstance(body.get("messages"), list) and "messages" in fields:
        messages = [_chat_message(m, i) for i, m in enumerate(body["messages"])]
        if any(new is not old for new, old in zip(messages, body["messages"], strict=True)):
            body = {**body, "messages": messages}
    return body


def _fail(field: str, e: MediaTextError) -> BridgeError:
    return BridgeError.invalid_request(f"{field}: {e}")


def _check_image_data(entries: list[Json]) -> None:
    for i, entry in enumerate(entries):
        data = entry.get("data") if isinstance(entry, dict) else None
        if isinstance(data, str):
            try:
                decode_base64(data, MAX_MEDIA_BYTES)
            except MediaTextError as e:
                raise _fail(f"image_data[{i}].data", e) from None


def _chat_message(message: Json, i: int) -> Json:
    """A message whose content parts are text and media only, with typed `content_parts`;
    any other message as it came (the service reads or refuses its parts)."""
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list) or not any(
            isinstance(p, dict) and p.get("type") in _MEDIA_PARTS for p in content):
        return message
    if not all(isinstance(p, dict) and (p.get("type") in _MEDIA_PARTS or (
            p.get("type") == "text" and isinstance(p.get("text"), str))) for p in content):
        return message
    parts = [_part(p, f"messages[{i}].content[{j}]") for j, p in enumerate(content)]
    # The parts stand for the content: anything else the message has is kept.
    out = {k: v for k, v in message.items() if k != "content"}
    out["content_parts"] = {"parts": parts}
    return out


def _part(part: dict[str, Json], field: str) -> dict[str, Json]:
    kind = part["type"]
    if kind == "text":
        return {"type": "text", "text": part["text"]}
    inner = part.get(kind)
    inner = inner if isinstance(inner, dict) else {}
    if kind == "image_url":
        text, fmt = inner.get("url"), None
    else:
        text, fmt = inner.get("data", inner.get("url")), inner.get("format")
    if not isinstance(text, str):
        raise BridgeError.invalid_request(f"{field}.{kind} must hold the media as a string")
    try:
        data, mime = parse_media_url(text, MAX_MEDIA_BYTES)
        if fmt is not None and not mime:
            mime = audio_format_mime(fmt)
    except MediaTextError as e:
        raise _fail(f"{field}.{kind}", e) from None
    media = {"data": base64.b64encode(data).decode("ascii"), "kind": _MEDIA_PARTS[kind]}
    if mime:
        media["mime_type"] = mime
    return {"type": kind, "media": media}
