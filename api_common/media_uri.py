"""Media given as text in a request (a chat part's `image_url.url` or `input_audio.data`, a
`multimodal_data` string): base64 and `data:` URIs into bytes, with the reason when they are
not. Shared by the REST bridge (its 400s) and the service (gRPC clients send the same JSON
shapes as google.protobuf.Value), so both front doors refuse the same text in the same words.

llama-server's decoder stops at the first character outside the base64 alphabet and keeps
what it read, so corrupt or cut-off data reaches the image decoder; here it is refused."""

from __future__ import annotations

import base64
import binascii
import re

# MIME types a request may declare, by kind. What each really is comes from its bytes
# (service.media); a type outside these is refused. Video is llama-server's third kind; it
# needs ffmpeg in libmtmd, which our build lacks, so it is refused by kind.
IMAGE_MIME = frozenset({"image/png", "image/jpeg", "image/jpg", "image/pjpeg", "image/bmp",
                        "image/x-bmp", "image/x-ms-bmp", "image/gif", "image/webp"})
AUDIO_MIME = frozenset({"audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave",
                        "audio/mpeg", "audio/mp3", "audio/mpeg3", "audio/flac", "audio/x-flac"})
KNOWN_MIME = IMAGE_MIME | AUDIO_MIME

# The most media bytes (decoded) one request may carry; service.media's other limits beside it.
MAX_MEDIA_BYTES = 20 << 20
# input_audio's OpenAI `format` as a MIME type.
AUDIO_FORMATS = {"wav": "audio/wav", "mp3": "audio/mpeg", "flac": "audio/flac"}

_WHITESPACE = re.compile(rb"[ \t\r\n]+")
_MIME = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*")


class MediaTextError(ValueError):
    """The text does not hold media the server takes; the message says why."""


def decode_base64(text: str, max_bytes: int) -> bytes:
    """Standard base64 (RFC 4648, `+/`, padding optional; line breaks and spaces allowed, as
    MIME writes them) into bytes. Anything else, a cut-off last group, or more than
    `max_bytes` once decoded (known from the length, before decoding) is refused."""
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        raise MediaTextError("invalid base64: the data holds characters outside the base64 "
                             "alphabet") from None
    if len(raw) // 4 * 3 > max_bytes + 3:
        raise MediaTextError(f"media too large: over {max_bytes} bytes once decoded")
    if _WHITESPACE.search(raw):
        raw = _WHITESPACE.sub(b"", raw)
    if not raw:
        raise MediaTextError("invalid base64: the data is empty")
    if len(raw) % 4 == 1:
        raise MediaTextError("invalid base64: the data is truncated (its length is not a "
                             "whole number of base64 groups)")
    raw += b"=" * (-len(raw) % 4)
    try:
        data = base64.b64decode(raw, validate=True)
    except binascii.Error as e:
        raise MediaTextError(f"invalid base64: {e}") from None
    if len(data) > max_bytes:
        raise MediaTextError(f"media too large: {len(data)} bytes, at most {max_bytes}")
    return data


def parse_media_url(url: str, max_bytes: int) -> tuple[bytes, str]:
    """A chat part's URL (a `data:` URI or bare base64) as (bytes, declared MIME type; "" for
    bare base64). A remote URL is refused: the server fetches nothing. llama-server's words
    where it has them (`file://`, a data URI without base64, a malformed one)."""
    lower = url[:8].lower()
    if lower.startswith(("http://", "https://")):
        raise MediaTextError("remote media URLs are not fetched: send the file inline as a "
                             "base64 data URI (data:image/png;base64,...)")
    if lower.startswith("file://"):  # llama-server's words: this server has no --media-path
        raise MediaTextError("file:// URLs are not allowed unless --media-path is specified")
    if not lower.startswith("data:"):
        return decode_base64(url, max_bytes), ""
    header, comma, payload = url.partition(",")
    if not comma or "," in payload:
        raise MediaTextError("Invalid uri-encoded base64 value")
    params = header[5:].split(";")
    mime = params[0].strip().lower()
    if not mime.startswith(("image/", "video/", "audio/")):
        raise MediaTextError(f"Invalid uri format: {header}")
    if params[-1].strip().lower() != "base64":
        raise MediaTextError("uri must be base64 encoded")
    check_mime(mime)
    return decode_base64(payload, max_bytes), mime


def check_mime(mime: str) -> None:
    """Refuse a declared MIME type the server does not know."""
    if mime in KNOWN_MIME:
        return
    if mime.startswith("video/"):
        raise MediaTextError(f"unsupported MIME type {mime!r}: video input is not supported")
    shown = mime if _MIME.fullmatch(mime) else repr(mime[:40])
    raise MediaTextError(f"unsupported MIME type {shown}: images may be PNG, JPEG, BMP or "
                         "GIF, audio WAV, MP3 or FLAC")


def audio_format_mime(fmt: object) -> str:
    """input_audio's `format` ("wav", "mp3", "flac") as a MIME type; another is refused
    (llama-server ignores it and sniffs the bytes, as we do after this)."""
    if isinstance(fmt, str) and fmt.lower() in AUDIO_FORMATS:
        return AUDIO_FORMATS[fmt.lower()]
    raise MediaTextError(f"unsupported input_audio format {str(fmt)[:40]!r}: wav, mp3 or flac")
