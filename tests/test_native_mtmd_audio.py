"""libmtmd's audio path through the binding (native.mtmd): the real library, tiny-bpe with its
random Qwen2-Audio-style projector (tiny-audio-mmproj), WAVs made in code.

Every started 30 s of audio is one media chunk of 750 embeddings (clip.cpp's Whisper window:
3000 mel frames, halved by the stride-2 conv and again by the pool), whatever the widths.
Tolerance: the same audio encoded twice must give identical embeddings (one process, one thread
count); different audio must differ by far more than float noise (max |diff| > 1e-3).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import native
from native.mtmd import MediaChunk, MediaError, Projector, ProjectorParams, TextChunk
from native.testmodels import ensure_model
from native.testmodels.catalog import TINY_AUDIO_MMPROJ
from native.testmodels.random_audio import SAMPLE_RATE
from native.testmodels.test_audio import make_wav, truncated_wav
from native.testmodels.test_images import make_png

PARAMS = ProjectorParams(use_gpu=False, n_threads=2)
PER_CHUNK = TINY_AUDIO_MMPROJ.tokens_per_chunk


@pytest.fixture(scope="module")
def model(tiny_bpe_path: Path) -> native.Model:
    return native.Model(tiny_bpe_path)


@pytest.fixture(scope="module")
def proj(model: native.Model) -> Projector:
    return Projector(model, ensure_model("tiny-audio-mmproj"), PARAMS)


def _prompt(proj: Projector) -> str:
    return "Listen to " + proj.marker + " and answer."


def test_projector_reports_audio(proj: Projector, model: native.Model) -> None:
    assert proj.supports_audio and not proj.supports_vision
    assert proj.audio_sample_rate == SAMPLE_RATE == 16000
    assert proj.n_embd == model.n_embd == 64
    assert not proj.uses_mrope
    assert PER_CHUNK == 750


def test_bitmap_from_wav_bytes(proj: Projector) -> None:
    wav = make_wav(0.5, 440.0)
    bmp = proj.bitmap(wav)
    assert bmp.is_audio and bmp.width == SAMPLE_RATE // 2  # samples, mono
    assert len(bmp.id) == 64 and bmp.id == proj.bitmap(wav).id
    assert bmp.id != proj.bitmap(make_wav(0.5, 880.0)).id


def test_tokenize_with_the_marker(proj: Projector, model: native.Model) -> None:
    chunks = proj.tokenize(_prompt(proj), [proj.bitmap(make_wav(0.5, 440.0))])
    assert [type(c) for c in chunks] == [TextChunk, MediaChunk, TextChunk]
    media = chunks.media[0]
    assert (media.kind, media.n_tokens, media.n_pos) == ("audio", PER_CHUNK, PER_CHUNK)
    assert not media.non_causal
    first = chunks[0]
    assert isinstance(first, TextChunk)
    # libmtmd puts Qwen2-Audio's <|audio_bos|> before the media (tokenized apart; plain text to
    # tiny-bpe's vocabulary) and <|audio_eos|> after
    tok = model.vocab.tokenize
    assert list(first.tokens) == (tok("Listen to ", add_special=True, parse_special=True)
                                  + tok("<|audio_bos|>", add_special=False, parse_special=True))


def test_audio_over_30_s_is_one_chunk_per_window(proj: Projector) -> None:
    chunks = proj.tokenize(_prompt(proj), [proj.bitmap(make_wav(31.0, 300.0))])
    assert [m.n_tokens for m in chunks.media] == [PER_CHUNK, PER_CHUNK]
    assert chunks.n_tokens == sum(c.n_tokens for c in chunks)


def test_encode_shape_determinism_and_difference(proj: Projector) -> None:
    def embed(freq: float, seconds: float = 0.5) -> np.ndarray:
        bmp = proj.bitmap(make_wav(seconds, freq))
        return proj.encode(proj.tokenize(_prompt(proj), [bmp]).media[0])

    a = embed(440.0)
    assert a.shape == (PER_CHUNK, 64) and a.dtype == np.float32 and np.isfinite(a).all()
    assert np.array_equal(a, embed(440.0))
    assert float(np.abs(a - embed(880.0)).max()) > 1e-3
    assert float(np.abs(a - embed(440.0, 0.25)).max()) > 1e-3


def test_what_the_audio_projector_refuses(proj: Projector) -> None:
    with pytest.raises(MediaError, match="does not take images"):
        proj.bitmap(make_png(8, 8))
    with pytest.raises(MediaError, match="does not take images"):
        proj.bitmap_from_rgb(2, 2, bytes(12))
    # miniaudio decodes what a cut-off WAV holds, as llama-server does: the service refuses it
    # before (service/media.py compares the sizes its header declares)
    cut = proj.bitmap(truncated_wav(0.5))
    assert cut.is_audio and 0 < cut.width < SAMPLE_RATE // 2


def test_the_image_projector_refuses_audio(model: native.Model) -> None:
    vision = Projector(model, ensure_model("tiny-vl-mmproj"), PARAMS)
    with pytest.raises(MediaError, match="does not take audio"):
        vision.bitmap(make_wav(0.1, 440.0))
