"""Unit tests of the media checks (service.media, api_common.media_uri): real files made in
code by Pillow and the stdlib's wave, headers built by hand for what no encoder makes
cheaply (a 20,000 x 20,000 image), and hypothesis for the header parsers."""

from __future__ import annotations

import base64
import io
import struct
import tracemalloc
import wave
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from api_common.media_uri import MediaTextError, decode_base64, parse_media_url
from native.media_probe import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE
from service.media import (
    MediaError,
    image_size,
    inspect,
    sniff,
)


def image_bytes(fmt: str, size: tuple[int, int] = (7, 5)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 90)).save(out, format=fmt)
    return out.getvalue()


def wav_bytes(frames: int = 800) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x01" * frames)
    return out.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height, with an empty IDAT and its IEND: a whole
    file as far as its structure goes (what a decoder would allocate for is the header's)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + \
            struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) \
        + chunk(b"IEND", b"")


@pytest.mark.parametrize(("fmt", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg"),
                                           ("BMP", "image/bmp"), ("GIF", "image/gif")])
def test_real_images_are_sniffed_and_measured(fmt: str, mime: str) -> None:
    data = image_bytes(fmt, (7, 5))
    info = inspect(data)
    assert (info.kind, info.mime, info.width, info.height, info.size) == \
        ("image", mime, 7, 5, len(data))
    assert inspect(data, mime, "image") == info


def test_jpeg_with_exif_and_progressive_frames() -> None:
    out = io.BytesIO()
    exif = Image.Exif()
    exif[0x010E] = "a description " * 20
    Image.new("RGB", (33, 17)).save(out, format="JPEG", progressive=True, exif=exif)
    assert image_size(out.getvalue(), "image/jpeg") == (33, 17)


def test_audio_is_sniffed() -> None:
    assert inspect(wav_bytes()).mime == "audio/wav"
    assert sniff(b"fLaC" + bytes(40)) == ("audio", "audio/flac")
    assert sniff(b"ID3\x04" + bytes(40)) == ("audio", "audio/mpeg")
    assert sniff(b"\xff\xfb\x90\x00" + bytes(40)) == ("audio", "audio/mpeg")


@pytest.mark.parametrize("data", [b"hello, this is text, not an image", b"%PDF-1.7\n" * 5,
                                  b"\x00" * 64, b"<svg xmlns='http://www.w3.org/2000/svg'/>"])
def test_non_media_payload_is_refused(data: bytes) -> None:
    with pytest.raises(MediaError, match="not a supported image or audio file"):
        inspect(data)


def test_empty_item_is_refused() -> None:
    with pytest.raises(MediaError, match="empty"):
        inspect(b"")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF"])
def test_truncated_images_are_refused(fmt: str) -> None:
    data = image_bytes(fmt, (40, 40))
    for cut in (len(data) // 2, len(data) - 3, 30):
        with pytest.raises(MediaError, match=r"truncated|corrupt"):
            inspect(data[:cut])


def test_truncated_bmp_and_wav_are_refused() -> None:
    bmp, wav = image_bytes("BMP", (40, 40)), wav_bytes(4000)
    with pytest.raises(MediaError, match="truncated"):
        inspect(bmp[: len(bmp) // 2])
    with pytest.raises(MediaError, match="truncated"):
        inspect(wav[: len(wav) // 2])


def test_huge_image_is_refused_from_its_header_in_bounded_memory() -> None:
    data = png_header(20_000, 20_000)
    tracemalloc.start()
    try:
        with pytest.raises(MediaError, match=r"image too large: 20000 x 20000 pixels"):
            inspect(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(data) < 100 and peak < 64 * 1024  # the 1.2 GB bitmap is never made


@pytest.mark.parametrize(("w", "h"), [(MAX_IMAGE_SIDE + 1, 1), (1, MAX_IMAGE_SIDE + 1),
                                      (MAX_IMAGE_SIDE, MAX_IMAGE_PIXELS // MAX_IMAGE_SIDE + 1),
                                      (0, 10)])
def test_image_limits(w: int, h: int) -> None:
    with pytest.raises(MediaError):
        inspect(png_header(w, h))


def test_largest_allowed_image_passes() -> None:
    side = MAX_IMAGE_PIXELS // MAX_IMAGE_SIDE
    assert inspect(png_header(MAX_IMAGE_SIDE, side)).width == MAX_IMAGE_SIDE


def test_declared_type_must_agree_with_the_bytes() -> None:
    png = image_bytes("PNG")
    assert inspect(png, "image/jpeg").mime == "image/png"  # both images: as llama-server
    with pytest.raises(MediaError, match="declared audio/wav but the bytes are image/png"):
        inspect(png, "audio/wav")
    with pytest.raises(MediaError, match="expected audio but the bytes are image/png"):
        inspect(png, "", "audio")
    with pytest.raises(MediaError, match="unsupported MIME type image/tiff"):
        inspect(png, "image/tiff")


def test_webp_is_recognised_and_refused() -> None:
    data = image_bytes("WEBP", (8, 8))
    assert sniff(data) == ("image", "image/webp")
    with pytest.raises(MediaError, match="WebP images are not supported"):
        inspect(data)


# -- base64 and data URIs ---------------------------------------------------------------------
def test_base64_forms() -> None:
    data = image_bytes("PNG")
    text = base64.b64encode(data).decode()
    assert decode_base64(text, 1 << 20) == data
    assert decode_base64(text.rstrip("="), 1 << 20) == data  # padding optional
    wrapped = "\n".join(text[i:i + 76] for i in range(0, len(text), 76))
    assert decode_base64(wrapped, 1 << 20) == data  # MIME line breaks


@pytest.mark.parametrize(("text", "why"), [
    ("aGVsbG8*d29ybGQ=", "invalid base64"), ("aGVsb", "truncated"), ("", "empty"),
    ("aGVsbG8=aGVs", "invalid base64"), ("héllo", "outside the base64 alphabet"),
    ("aGVs-G8_", "invalid base64")])
def test_corrupt_base64_is_refused(text: str, why: str) -> None:
    with pytest.raises(MediaTextError, match=why):
        decode_base64(text, 1 << 20)


def test_base64_size_limit_before_decoding() -> None:
    with pytest.raises(MediaTextError, match="media too large"):
        decode_base64("A" * 4_000_000, 1 << 20)


def test_data_uris() -> None:
    data = image_bytes("PNG")
    b64 = base64.b64encode(data).decode()
    assert parse_media_url(f"data:image/png;base64,{b64}", 1 << 20) == (data, "image/png")
    assert parse_media_url(b64, 1 << 20) == (data, "")


@pytest.mark.parametrize(("url", "why"), [
    ("https://example.com/cat.png", "remote media URLs are not fetched"),
    ("http://127.0.0.1/x.png", "remote media URLs are not fetched"),
    ("file:///etc/passwd", "file:// URLs are not allowed unless --media-path"),
    ("data:image/png,iVBORw0KGgo=", "uri must be base64 encoded"),
    ("data:image/png;base64", "Invalid uri-encoded base64 value"),
    ("data:text/plain;base64,aGVsbG8=", "Invalid uri format: data:text/plain;base64"),
    ("data:image/tiff;base64,aGVsbG8=", "unsupported MIME type image/tiff"),
    ("data:video/mp4;base64,aGVsbG8=", "video input is not supported"),
    ("data:image/png;base64,iVBORw0K!!!", "invalid base64")])
def test_bad_urls_are_refused(url: str, why: str) -> None:
    with pytest.raises(MediaTextError, match=why):
        parse_media_url(url, 1 << 20)


# -- header parsers on arbitrary bytes: a MediaError or a size, nothing else --------------------
@settings(max_examples=300, deadline=None)
@given(st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"BM", b"RIFF",
                        b"fLaC", b"ID3"]), st.binary(max_size=300))
def test_parsers_never_crash(magic: bytes, rest: bytes) -> None:
    try:
        info = inspect(magic + rest)
    except MediaError:
        return
    if info.kind == "image":
        assert 0 < info.width <= MAX_IMAGE_SIDE and 0 < info.height <= MAX_IMAGE_SIDE


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 400), st.integers(1, 400), st.sampled_from(["PNG", "JPEG", "BMP", "GIF"]))
def test_sizes_match_the_encoder(w: int, h: int, fmt: str) -> None:
    info = inspect(image_bytes(fmt, (w, h)))
    assert (info.width, info.height) == (w, h)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 2**31 - 1), st.integers(1, 2**31 - 1))
def test_png_header_sizes(w: int, h: int) -> None:
    data = png_header(w, h)
    assert image_size(data, "image/png") == (w, h)
    if w > MAX_IMAGE_SIDE or h > MAX_IMAGE_SIDE or w * h > MAX_IMAGE_PIXELS:
        with pytest.raises(MediaError, match="image too large"):
            inspect(data)
