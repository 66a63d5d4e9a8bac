"""Test images made in code (no binary file in the repository): PNGs written with zlib and struct.

    make_png(32, 32, pattern=1)        # a valid 8-bit RGB PNG, different for every pattern
    declared_png(20_000, 20_000)       # a small, well-formed PNG that declares a huge size
"""

from __future__ import annotations

import struct
import zlib


def _chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def _png(width: int, height: int, rows: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
            + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b""))


def pixels(width: int, height: int, pattern: int = 0) -> bytes:
    """The RGB bytes make_png encodes: gradients whose slopes and offsets depend on `pattern`."""
    out = bytearray()
    for y in range(height):
        for x in range(width):
            out += bytes(((x * (3 + pattern) + 17 * pattern) % 256,
                          (y * (5 + 2 * pattern) + 101 * pattern) % 256,
                          ((x ^ y) * (7 + pattern) + 53 * pattern) % 256))
    return bytes(out)


def make_png(width: int, height: int, pattern: int = 0) -> bytes:
    """A valid PNG of width x height pixels; different `pattern`s give different pixels."""
    rgb = pixels(width, height, pattern)
    stride = 3 * width
    rows = b"".join(b"\x00" + rgb[y * stride:(y + 1) * stride] for y in range(height))
    return _png(width, height, rows)


def declared_png(width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height but whose data is one short row: what a decoder
    would allocate for is the declared size."""
    return _png(width, height, b"\x00" * 4)
