"""native.media_probe: media kinds and declared image sizes read from headers, before decoding."""

from __future__ import annotations

import struct

import pytest

from native.media_probe import MAX_AUDIO_BYTES, MediaError, probe
from native.testmodels.test_images import declared_png, make_png


def _jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof + b"\xff\xd9"


def _bmp(width: int, height: int) -> bytes:
    return b"BM" + bytes(12) + struct.pack("<Iii", 40, width, height) + bytes(28)


def test_png_size_is_read_from_ihdr() -> None:
    info = probe(make_png(5, 3))
    assert (info.kind, info.format, info.width, info.height) == ("image", "PNG", 5, 3)


@pytest.mark.parametrize("data, fmt, size", [
    (_jpeg(640, 480), "JPEG", (640, 480)),
    (_bmp(7, -9), "BMP", (7, 9)),
    (b"GIF89a" + struct.pack("<HH", 12, 34) + bytes(8), "GIF", (12, 34)),
    (b"P6\n# comment\n 20 30\n255\n" + bytes(10), "PNM", (20, 30)),
])
def test_other_formats_sizes(data: bytes, fmt: str, size: tuple[int, int]) -> None:
    info = probe(data)
    assert (info.format, (info.width, info.height)) == (fmt, size)


@pytest.mark.parametrize("data", [declared_png(20_000, 20_000), _jpeg(20_000, 20_000),
                                  _bmp(9000, 10), declared_png(8000, 8193)])
def test_huge_declared_sizes_are_refused(data: bytes) -> None:
    with pytest.raises(MediaError, match="exceeds the limit"):
        probe(data)


def test_pixel_limit_is_a_parameter() -> None:
    with pytest.raises(MediaError, match="exceeds"):
        probe(make_png(4, 4), max_pixels=15)
    assert probe(make_png(4, 4), max_pixels=16).width == 4


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"hello, world, not an image", "not a supported"),
    (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "WebP"),
    (make_png(4, 4)[:20], "truncated PNG"),
    (b"\x89PNG\r\n\x1a\n" + bytes(8) + b"IDAT" + bytes(8), "IHDR"),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "JPEG"),
    (b"\xff\xd8garbage!", "JPEG"),
    (_jpeg(0, 10), "empty size"),
    (b"P6 12", "truncated PNM"),
    # Latin-1 superscript digits and a no-break space: str.isdigit()/isspace() say yes, so
    # they once reached int() and raised a plain ValueError.
    (b"P6 \xb2 2 255\n", "malformed PNM"),
    (b"P5 2\xa02 255\n", "malformed PNM"),
    (b"P6 1\xb9 2 255\n", "malformed PNM"),
])
def test_malformed_headers_are_clear_errors(data: bytes, message: str) -> None:
    with pytest.raises(MediaError, match=message):
        probe(data)


def test_audio_is_recognised_by_magic_and_bounded() -> None:
    wav = b"RIFF" + struct.pack("<I", 36) + b"WAVEfmt " + bytes(24)
    assert probe(wav).kind == "audio"
    assert probe(b"fLaC" + bytes(20)).format == "flac"
    assert probe(b"ID3" + bytes(20)).format == "mp3"
    with pytest.raises(MediaError, match="audio file"):
        probe(b"ID3" + bytes(MAX_AUDIO_BYTES))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP"])
def test_the_service_reads_sizes_with_this_reader(fmt: str) -> None:
    """service.media's image_size is this module's reader plus its end-of-file checks: the
    two agree on every format both take."""
    import io

    from PIL import Image

    from native.media_probe import read_image_size
    from service.media import inspect

    out = io.BytesIO()
    Image.new("RGB", (37, 19), (1, 2, 3)).save(out, format=fmt)
    data = out.getvalue()
    assert read_image_size(data)[1:] == (37, 19)
    info = inspect(data)
    assert (info.width, info.height) == (37, 19)
