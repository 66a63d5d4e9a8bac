"""Test audio made in code (no binary file in the repository): 16-bit PCM mono WAVs.

    make_wav(0.5, 440.0)    # half a second of a 440 Hz sine at 16 kHz
    truncated_wav(0.5)      # the same with its data cut short of what the header declares
"""

from __future__ import annotations

import math
import struct


def make_wav(seconds: float, freq_hz: float, sample_rate: int = 16000,
             amplitude: float = 0.5) -> bytes:
    """A valid RIFF/WAVE file: a sine of `freq_hz`, mono, 16-bit little-endian PCM."""
    n = int(seconds * sample_rate)
    peak = int(32767 * amplitude)
    step = 2 * math.pi * freq_hz / sample_rate
    samples = struct.pack(f"<{n}h", *(round(peak * math.sin(step * i)) for i in range(n)))
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, 2 * sample_rate, 2, 16)  # PCM, mono, 16-bit
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(samples)) + samples
    return b"RIFF" + struct.pack("<I", len(body)) + body


def truncated_wav(seconds: float) -> bytes:
    """A WAV whose RIFF and data sizes promise more samples than follow (a cut-off download)."""
    wav = make_wav(seconds, 440.0)
    return wav[:len(wav) // 2]
