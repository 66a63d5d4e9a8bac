"""Media bytes checked before anything native sees them: the real format sniffed from the
magic bytes (not the declared MIME type), an image's width and height read from its header
(never decoded here), a truncated file refused by its missing end, and the limits below.

Pure Python, in time and memory bounded by the header walk: a 20,000 x 20,000 PNG is refused
from its first 24 bytes. llama.cpp's image decoder (stb_image) would allocate the full bitmap
(1.2 GB for that PNG) before the projector ever saw it, and its audio decoder (miniaudio)
reads what it is given; so only files that pass here go on.

The formats are those libmtmd decodes: PNG, JPEG, BMP, GIF (stb_image) and WAV, MP3, FLAC
(miniaudio), sniffed as mtmd-helper does. WebP is recognised and refused: libmtmd decodes it
only through ffmpeg, which our build leaves out."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from api_common.media_uri import (
    AUDIO_MIME,
    IMAGE_MIME,
    MediaTextError,
    check_mime,
)
from native.media_probe import MAX_AUDIO_BYTES, MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, read_image_size
from native.media_probe import MediaError as ProbeError

# Limits (docs/api.md, "Media"). Per image, each side and the pixel count, read from the
# header; per audio file, its bytes: native.media_probe's, which the engine applies again
# before libmtmd, so the two checks cannot disagree.
# Per request: media items and their decoded bytes together.
MAX_MEDIA_ITEMS = 32
# MAX_MEDIA_BYTES (per request) is api_common's: the REST bridge applies it too.

IMAGE, AUDIO = "image", "audio"
_PNG_END = b"\x00\x00\x00\x00IEND\xae\x42\x60\x82"


class MediaError(ValueError):
    """The bytes are not media the server takes; the message says why."""


@dataclass(frozen=True)
class MediaInfo:
    """What a media item really is. width and height: an image's, from its header (0 for
    audio)."""
    kind: str
    mime: str
    size: int
    width: int = 0
    height: int = 0


def sniff(data: bytes) -> tuple[str, str]:
    """(kind, MIME type) from the magic bytes; MediaError when they are no format we take."""
    head = data[:16]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return IMAGE, "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return IMAGE, "image/jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return IMAGE, "image/gif"
    if head.startswith(b"BM") and len(head) >= 14:
        return IMAGE, "image/bmp"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return IMAGE, "image/webp"
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return AUDIO, "audio/wav"
    if head.startswith(b"fLaC"):
        return AUDIO, "audio/flac"
    # mtmd-helper's MP3 test: an ID3 tag or an MPEG frame sync (11 set bits).
    if head.startswith(b"ID3") or (len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return AUDIO, "audio/mpeg"
    raise MediaError("not a supported image or audio file (the bytes are none of PNG, JPEG, "
                     "BMP, GIF, WAV, MP3, FLAC)")


def inspect(data: bytes, declared_mime: str = "", declared_kind: str = "") -> MediaInfo:
    """Check one media item: its format, that it agrees with what the request declared, that
    it is whole, and (an image) its size against the limits."""
    if not data:
        raise MediaError("the media item is empty")
    kind, mime = sniff(data)
    if declared_mime:
        try:
            check_mime(declared_mime)
        except MediaTextError as e:
            raise MediaError(str(e)) from None
        said = IMAGE if declared_mime in IMAGE_MIME else AUDIO if declared_mime in AUDIO_MIME \
            else ""
        if said != kind:
            raise MediaError(f"declared {declared_mime} but the bytes are {mime}")
    if declared_kind and declared_kind != kind:
        raise MediaError(f"expected {declared_kind} but the bytes are {mime}")
    if mime == "image/webp":
        raise MediaError("WebP images are not supported (libmtmd decodes them only through "
                         "ffmpeg, which this build lacks): send PNG, JPEG, BMP or GIF")
    if kind == AUDIO:
        _check_audio(data, mime)
        return MediaInfo(kind, mime, len(data))
    width, height = image_size(data, mime)
    check_dimensions(width, height)
    return MediaInfo(kind, mime, len(data), width, height)


def check_dimensions(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise MediaError(f"the image header declares a size of {width} x {height} pixels")
    if width > MAX_IMAGE_SIDE or height > MAX_IMAGE_SIDE or width * height > MAX_IMAGE_PIXELS:
        raise MediaError(f"image too large: {width} x {height} pixels; at most "
                         f"{MAX_IMAGE_SIDE} a side and {MAX_IMAGE_PIXELS} pixels in all")


def image_size(data: bytes, mime: str) -> tuple[int, int]:
    """(width, height) from the header of an image whose format `sniff` gave (read by
    native.media_probe, the one header reader); MediaError for a header that is cut off or
    malformed, or a file whose end is missing."""
    whole = _WHOLE.get(mime)
    if whole is None:
        raise MediaError(f"no size reader for {mime}")
    try:
        _, width, height = read_image_size(data)
    except ProbeError as e:
        raise MediaError(f"truncated or corrupt {mime} image: {e}") from None
    whole(data)
    return width, height


def _truncated(mime: str) -> MediaError:
    return MediaError(f"truncated or corrupt {mime} image")


def _png_whole(data: bytes) -> None:
    if not data.endswith(_PNG_END):
        raise MediaError("truncated image/png image: it lacks its IEND chunk")


def _jpeg_whole(data: bytes) -> None:
    if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise MediaError("truncated image/jpeg image: it lacks its end marker")


def _gif_whole(data: bytes) -> None:
    if not data.rstrip(b"\x00").endswith(b";"):
        raise MediaError("truncated image/gif image: it lacks its trailer")


def _bmp_whole(data: bytes) -> None:
    (file_size,) = struct.unpack("<I", data[2:6])
    (offset, header) = struct.unpack("<II", data[10:18])
    if header != 12 and header < 40:
        raise _truncated("image/bmp")
    # bfSize is often 0 or wrong; the pixel data's offset is not: it must lie in the file.
    if offset >= len(data) or (file_size > len(data) and file_size - len(data) > 4):
        raise MediaError("truncated image/bmp image: the file is shorter than its header says")


# A file's end, checked beside its header: a cut-off upload is refused here, where the
# decoder would fail later with a vaguer reason.
_WHOLE = {"image/png": _png_whole, "image/jpeg": _jpeg_whole, "image/gif": _gif_whole,
          "image/bmp": _bmp_whole}


def _check_audio(data: bytes, mime: str) -> None:
    if len(data) > MAX_AUDIO_BYTES:
        raise MediaError(f"audio file too large: {len(data)} bytes, at most {MAX_AUDIO_BYTES}")
    if mime == "audio/wav":
        if len(data) < 44 or b"fmt " not in data[12:512]:  # JUNK chunks may come first
            raise MediaError("truncated or corrupt audio/wav file: no format chunk")
        (riff_size,) = struct.unpack("<I", data[4:8])
        # Streaming writers leave the size at 0 or 0xFFFFFFFF; any other must fit the bytes.
        if 0 < riff_size < 0xFFFFFFFF and riff_size + 8 > len(data):
            raise MediaError("truncated audio/wav file: shorter than its RIFF header says")
    elif len(data) < 16:
        raise MediaError(f"truncated {mime} file")
