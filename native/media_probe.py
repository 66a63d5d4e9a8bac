"""What a media payload is and how large it would decode, read from its header alone.

libmtmd decodes images with stb_image, which allocates width x height x 3 bytes (and more while
it inflates) for whatever size the header declares: a 20,000 x 20,000 PNG of a few kilobytes
asks for 1.2 GB before a pixel is checked. So the dimensions are read here, in Python, in
bounded time (a JPEG's markers are walked, nothing is inflated), and an image over the limits is
refused before any native call. Only formats whose header this module reads are accepted: PNG,
JPEG, GIF, BMP and binary PNM (all decoded by stb_image); WebP, TGA, PSD, HDR and PIC are
refused as unsupported. Audio is recognised by the same magic bytes libmtmd's helper uses
(RIFF/WAVE, ID3 or an MPEG frame sync, fLaC); its length is bounded by bytes.

Pure Python with no native dependency: the service and the REST bridge may call it too.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# stb_image's own ceiling is 2^24 per side; ours is far lower. 8192 x 8192 RGB is 192 MiB
# decoded, already more than any projector uses (they resize to a few hundred pixels a side).
MAX_IMAGE_SIDE = 8192
MAX_IMAGE_PIXELS = 8192 * 8192
# An encoded audio file; decoded to 16 kHz mono float32 it may be ~10x larger (MP3).
MAX_AUDIO_BYTES = 16 * 1024 * 1024


class MediaError(ValueError):
    """A media payload that is empty, malformed, of an unsupported format, or too large."""


@dataclass(frozen=True)
class MediaInfo:
    """What the header says: kind ("image" or "audio"), format name, and for images the size."""

    kind: str
    format: str
    width: int = 0
    height: int = 0


def probe(data: bytes, max_side: int = MAX_IMAGE_SIDE,
          max_pixels: int = MAX_IMAGE_PIXELS) -> MediaInfo:
    """The payload's kind, format and declared size; MediaError if it must not be decoded."""
    if not data:
        raise MediaError("empty media payload")
    audio = _audio_format(data)
    if audio is not None:
        if len(data) > MAX_AUDIO_BYTES:
            raise MediaError(f"audio file of {len(data)} bytes exceeds the limit of "
                             f"{MAX_AUDIO_BYTES} bytes")
        return MediaInfo("audio", audio)
    fmt, width, height = read_image_size(data)
    if width <= 0 or height <= 0:
        raise MediaError(f"{fmt} image declares an empty size ({width} x {height})")
    if width > max_side or height > max_side or width * height > max_pixels:
        raise MediaError(
            f"{fmt} image of {width} x {height} pixels exceeds the limit ({max_side} pixels a "
            f"side, {max_pixels} pixels in all)")
    return MediaInfo("image", fmt, width, height)


def _audio_format(data: bytes) -> str | None:
    # The rule of libmtmd's helper (is_audio_file), so that both agree on what is audio.
    if len(data) < 12:
        return None
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:3] == b"ID3" or (data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return "mp3"
    if data[:4] == b"fLaC":
        return "flac"
    return None


def read_image_size(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from an image's header, nothing decoded; MediaError for a
    format this module does not read or a header cut off or malformed. The one header reader
    of the service and the native layer (service/media.py adds its request-side checks)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG", *_png_size(data)
    if data.startswith(b"\xff\xd8"):
        return "JPEG", *_jpeg_size(data)
    if data[:6] in (b"GIF87a", b"GIF89a"):
        _need(data, 10, "GIF")
        w, h = struct.unpack_from("<HH", data, 6)
        return "GIF", w, h
    if data.startswith(b"BM"):
        return "BMP", *_bmp_size(data)
    if data[:2] in (b"P5", b"P6"):
        return "PNM", *_pnm_size(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        raise MediaError("WebP images are not supported (this build decodes PNG, JPEG, GIF, "
                         "BMP and PNM)")
    raise MediaError("not a supported image or audio format (images: PNG, JPEG, GIF, BMP, "
                     "PNM; audio: WAV, MP3, FLAC)")


def _need(data: bytes, n: int, fmt: str) -> None:
    if len(data) < n:
        raise MediaError(f"truncated {fmt} header ({len(data)} bytes)")


def _png_size(data: bytes) -> tuple[int, int]:
    _need(data, 24, "PNG")
    if data[12:16] != b"IHDR":
        raise MediaError("malformed PNG: the first chunk is not IHDR")
    w, h = struct.unpack_from(">II", data, 16)
    return w, h


# SOF0..SOF15 carry the frame size, except DHT (C4), JPG (C8) and DAC (CC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg_size(data: bytes) -> tuple[int, int]:
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise MediaError("malformed JPEG: expected a marker")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            i += 2
            continue
        if marker in (0xD9, 0xDA):
            break  # end of image, or scan data before any frame header
        (length,) = struct.unpack_from(">H", data, i + 2)
        if length < 2:
            raise MediaError("malformed JPEG: segment length below 2")
        if marker in _SOF:
            _need(data, i + 9, "JPEG")
            h, w = struct.unpack_from(">HH", data, i + 5)
            return w, h
        i += 2 + length
    raise MediaError("truncated or malformed JPEG: no frame header (SOF) found")


def _bmp_size(data: bytes) -> tuple[int, int]:
    _need(data, 26, "BMP")
    (header_size,) = struct.unpack_from("<I", data, 14)
    if header_size == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        w, h = struct.unpack_from("<HH", data, 18)
        return w, h
    w, h = struct.unpack_from("<ii", data, 18)
    return w, abs(h)  # a negative height means top-down rows


_ASCII_DIGITS = frozenset(b"0123456789")
_PNM_SPACE = frozenset(b" \t\n\v\f\r")


def _pnm_size(data: bytes) -> tuple[int, int]:
    fields: list[int] = []
    i, n = 2, min(len(data), 1024)  # the text header is short; a longer one is refused
    while len(fields) < 2 and i < n:
        c = data[i]
        if c == ord("#"):
            while i < n and data[i] not in b"\r\n":
                i += 1
        elif c in _ASCII_DIGITS:  # not str.isdigit(): "\xb2" (superscript two) is one
            j = i
            while j < n and data[j] in _ASCII_DIGITS:
                j += 1
            if j - i > 9:
                raise MediaError("malformed PNM: size field too long")
            fields.append(int(data[i:j]))
            i = j
        elif c in _PNM_SPACE:
            i += 1
        else:
            raise MediaError("malformed PNM header")
    if len(fields) < 2:
        raise MediaError("truncated PNM header")
    return fields[0], fields[1]
