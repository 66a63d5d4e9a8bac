"""Write a Qwen2-Audio-style audio projector GGUF with random weights, as clip.cpp loads it.

Projector type "qwen2a": a Whisper encoder (two conv1d over the log-mel frames, the second with
stride 2, GELU; learned positions; pre-norm layers of LayerNorm / attention with q and v biases
but none on k / GELU MLP), a 2 x average pool, then one linear layer `mm.a.fc` into the text
model's embedding width. Of the audio projectors in the pinned clip.cpp it has the fewest
tensors and keys: ultravox, voxtral, meralion and glma add frame stacking and more projector
layers, music_flamingo a two-layer projector; qwen3a, gemma, granite, parakeet and the
conformers add conv2d stacks, relative positions or their own preprocessors. The mel filterbank
is not in the file: libmtmd's Whisper preprocessor computes it from `num_mel_bins`, the 16 kHz
rate and the 400-point FFT it fixes.

What clip.cpp fixes and the spec cannot change: every 30 s of audio (the preprocessor pads the
input with 30 s of silence and keeps whole chunks) is 3000 mel frames -> 1500 positions after
the stride-2 conv (so the position table needs 1500 rows) -> 750 embeddings after the pool.
Tensor names and keys are clip-impl.h's (TN_*, KEY_*); all tensors are F32.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import gguf

from native.testmodels.random_clip import (
    TensorSpec,
    add_encoder_keys,
    encoder_blocks,
    write_tensors,
)

# Whisper's 30 s window in mel frames, halved by the stride-2 conv (clip.cpp's whisper graph).
N_POSITIONS = 1500
SAMPLE_RATE = 16000  # clip.cpp sets it for every Whisper-style projector


@dataclass(frozen=True)
class AudioSpec:
    """Everything that decides a random audio projector's bytes (all of it is the cache key)."""

    general_name: str
    n_embd_text: int  # the text model's n_embd: mm.a.fc's output width
    n_embd: int  # the encoder's width
    n_head: int
    n_ff: int
    n_layer: int
    n_mel: int
    seed: int
    layer_norm_eps: float = 1e-5

    @property
    def tokens_per_chunk(self) -> int:
        """Embeddings for each started 30 s of audio."""
        return N_POSITIONS // 2

    def key_parameters(self) -> dict[str, object]:
        return asdict(self)


def _tensors(spec: AudioSpec) -> Iterator[TensorSpec]:
    """(name, numpy shape, std) in file order; std 0 means ones (a norm's weight), -1 zeros."""
    d, ff, m = spec.n_embd, spec.n_ff, spec.n_mel
    # conv1d kernels are (out, in, width) in numpy; their biases (out, 1) to broadcast over time.
    yield "a.conv1d.1.weight", (d, m, 3), 1.0 / math.sqrt(3 * m)
    yield "a.conv1d.1.bias", (d, 1), 0.02
    yield "a.conv1d.2.weight", (d, d, 3), 1.0 / math.sqrt(3 * d)
    yield "a.conv1d.2.bias", (d, 1), 0.02
    yield "a.position_embd.weight", (N_POSITIONS, d), 0.02
    # Whisper's k projection has no bias (the graph asserts it)
    yield from encoder_blocks("a", spec.n_layer, d, ff, k_bias=False)
    yield "a.post_ln.weight", (d,), 0.0
    yield "a.post_ln.bias", (d,), -1.0
    yield "mm.a.fc.weight", (spec.n_embd_text, d), 1.0 / math.sqrt(d)
    yield "mm.a.fc.bias", (spec.n_embd_text,), 0.02


def write_random_audio(spec: AudioSpec, out_path: Path) -> None:
    """Write the audio projector described by `spec` to `out_path` (overwriting it)."""
    if spec.n_embd % spec.n_head:
        raise ValueError("n_embd must be a multiple of n_head")
    writer = gguf.GGUFWriter(str(out_path), arch="clip")
    writer.add_name(spec.general_name)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_bool("clip.has_audio_encoder", True)
    writer.add_string("clip.projector_type", "qwen2a")
    add_encoder_keys(writer, "clip.audio.", spec.n_embd, spec.n_ff, spec.n_layer,
                     spec.n_embd_text, spec.n_head, spec.layer_norm_eps)
    writer.add_uint32("clip.audio.num_mel_bins", spec.n_mel)
    write_tensors(writer, _tensors(spec), spec.seed)
