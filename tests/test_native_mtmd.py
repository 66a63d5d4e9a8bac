"""libmtmd through the binding (native.mtmd, native.mtmd_decode): the real library, tiny-bpe with
its random LLaVA projector (tiny-vl-mmproj), images made in code; bad input is a clean exception.

Tolerance: the same image encoded twice must give identical embeddings (one process, one
thread count); different images must differ by far more than float noise (max |diff| > 1e-3).
"""

from __future__ import annotations

import gc
import zlib
from pathlib import Path

import numpy as np
import pytest

import native
from native.errors import InvalidInputError, ModelLoadError
from native.mtmd import (
    Bitmap,
    MediaChunk,
    MediaError,
    Projector,
    ProjectorParams,
    TextChunk,
    default_marker,
)
from native.mtmd_decode import decode_embeddings
from native.testmodels import ensure_model
from native.testmodels.catalog import TINY_VL_MMPROJ
from native.testmodels.test_images import declared_png, make_png

PARAMS = ProjectorParams(use_gpu=False, n_threads=2)


@pytest.fixture(scope="module")
def model(tiny_bpe_path: Path) -> native.Model:
    return native.Model(tiny_bpe_path)


@pytest.fixture(scope="module")
def proj(model: native.Model) -> Projector:
    return Projector(model, ensure_model("tiny-vl-mmproj"), PARAMS)


def _prompt(proj: Projector, n: int = 1) -> str:
    return "Describe " + " and ".join([proj.marker] * n) + " briefly."


def test_projector_reports_what_it_takes(proj: Projector, model: native.Model) -> None:
    assert proj.supports_vision and not proj.supports_audio
    assert proj.audio_sample_rate == -1
    assert proj.marker == default_marker()
    assert proj.n_embd == model.n_embd == 64
    assert not proj.uses_mrope


def test_bitmap_from_png(proj: Projector) -> None:
    png = make_png(40, 24, pattern=1)
    bmp = proj.bitmap(png)
    assert (bmp.width, bmp.height, bmp.n_bytes, bmp.is_audio) == (40, 24, 40 * 24 * 3, False)
    assert len(bmp.id) == 64 and bmp.id == proj.bitmap(png).id  # sha256 of the bytes
    assert bmp.id != proj.bitmap(make_png(40, 24, pattern=2)).id


def test_tokenize_text_and_image(proj: Projector, model: native.Model) -> None:
    bmp = proj.bitmap(make_png(32, 32))
    chunks = proj.tokenize(_prompt(proj), [bmp])
    kinds = [type(c) for c in chunks]
    assert kinds == [TextChunk, MediaChunk, TextChunk]
    media = chunks.media[0]
    patches = (TINY_VL_MMPROJ.image_size // TINY_VL_MMPROJ.patch_size) ** 2
    assert (media.kind, media.n_tokens, media.n_pos) == ("image", patches, patches)
    assert media.id == bmp.id and not media.non_causal
    first = chunks[0]
    assert isinstance(first, TextChunk)
    assert list(first.tokens) == model.vocab.tokenize("Describe ", add_special=True,
                                                      parse_special=True)
    assert chunks.n_tokens == sum(c.n_tokens for c in chunks)


def test_encode_shape_determinism_and_difference(proj: Projector) -> None:
    def embed(pattern: int, size: tuple[int, int] = (32, 32)) -> np.ndarray:
        bmp = proj.bitmap(make_png(*size, pattern=pattern))
        return proj.encode(proj.tokenize(_prompt(proj), [bmp]).media[0])

    a = embed(1)
    assert a.shape == (16, 64) and a.dtype == np.float32 and np.isfinite(a).all()
    assert np.array_equal(a, embed(1))
    assert float(np.abs(a - embed(2)).max()) > 1e-3
    assert embed(3, (100, 37)).shape == (16, 64)  # resized to the projector's 32 x 32


def test_two_images_in_one_prompt(proj: Projector) -> None:
    b1, b2 = proj.bitmap(make_png(32, 32, 1)), proj.bitmap(make_png(32, 32, 2))
    media = proj.tokenize(_prompt(proj, 2), [b1, b2]).media
    assert [m.id for m in media] == [b1.id, b2.id]
    e1, e2 = proj.encode(media[1]), proj.encode(media[0])
    assert not np.array_equal(e1, e2)


def test_chunks_outlive_their_list_and_bitmaps(proj: Projector) -> None:
    bmp = proj.bitmap(make_png(32, 32, 4))
    expected = proj.encode(proj.tokenize(_prompt(proj), [bmp]).media[0])
    chunk = proj.tokenize(_prompt(proj), [bmp]).media[0]
    del bmp
    gc.collect()
    assert np.array_equal(proj.encode(chunk), expected)


def _generate(model: native.Model, proj: Projector, png: bytes, n: int = 6) -> list[int]:
    chunks = proj.tokenize(_prompt(proj), [proj.bitmap(png)])
    params = native.ContextParams(n_ctx=256, n_batch=64, n_ubatch=64, n_threads=2)
    with native.Context(model, params) as ctx, native.SamplerChain(model.vocab) as chain:
        chain.greedy()
        pos, idx = 0, -1
        for c in chunks:
            if isinstance(c, MediaChunk):
                pos = decode_embeddings(ctx, proj.encode(c), pos, 0, non_causal=c.non_causal)
                continue
            batch = native.Batch(64)
            idx = batch.add_sequence(list(c.tokens), pos, 0, output_last=True)
            ctx.decode(batch)
            pos += c.n_tokens
        out = []
        for _ in range(n):
            tok = chain.sample(ctx, idx)
            out.append(tok)
            batch = native.Batch(1)
            idx = batch.add(tok, pos, 0, True)
            ctx.decode(batch)
            pos += 1
        return out


@pytest.mark.slow
def test_decode_embeddings_then_generate(model: native.Model, proj: Projector) -> None:
    a = _generate(model, proj, make_png(32, 32, 1))
    assert len(a) == 6 and all(0 <= t < model.vocab.n_tokens for t in a)
    assert a == _generate(model, proj, make_png(32, 32, 1))
    # The image reaches the logits: other images, other continuations (of 5 tried, not all
    # five continue alike; random weights make each image's effect large).
    others = {tuple(_generate(model, proj, make_png(32, 32, p))) for p in range(2, 6)}
    assert others - {tuple(a)}


def test_logits_after_an_image_at_the_end(model: native.Model, proj: Projector) -> None:
    chunk = proj.tokenize(proj.marker, [proj.bitmap(make_png(32, 32))], add_special=False).media
    embd = proj.encode(chunk[0])
    with native.Context(model, native.ContextParams(n_ctx=64, n_batch=8, n_threads=2)) as ctx:
        # n_batch 8 < 16 embeddings: decoded in two slices, the last one with logits
        assert decode_embeddings(ctx, embd, 0, 0, logits_last=True) == 16
        logits = np.array(ctx.logits_ith(-1))
        assert logits.shape == (model.vocab.n_tokens,) and np.isfinite(logits).all()


# -- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"this is plain text, not an image", "not a supported"),
    (declared_png(20_000, 20_000), "exceeds the limit"),
    (make_png(32, 32)[:60], "could not decode"),  # truncated inside IDAT
    (make_png(32, 32)[:33] + bytes(40), "could not decode"),  # IDAT replaced by zeros
    (b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + bytes(17), "empty size"),
    (b"\xff\xd8\xff\xdb\x00\x43" + bytes(67) + b"\xff\xd9", "JPEG"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(24), "does not take audio"),
])
def test_bad_media_is_a_clean_error(proj: Projector, data: bytes, message: str) -> None:
    with pytest.raises(MediaError, match=message):
        proj.bitmap(data)


def test_corrupt_deflate_stream(proj: Projector) -> None:
    png = bytearray(make_png(32, 32, 1))
    idat = png.index(b"IDAT") + 4
    png[idat + 2:idat + 40] = bytes(range(38))  # garbage inside the zlib stream, CRC wrong
    with pytest.raises(MediaError, match="could not decode"):
        proj.bitmap(bytes(png))


def test_huge_declared_image_is_refused_before_decoding(proj: Projector) -> None:
    data = declared_png(20_000, 20_000)
    assert len(data) < 100 and zlib.crc32(data)  # a few bytes that would ask for 1.2 GB
    with pytest.raises(MediaError, match="20000 x 20000"):
        proj.bitmap(data)


def test_marker_count_must_match_bitmaps(proj: Projector) -> None:
    bmp = proj.bitmap(make_png(8, 8))
    with pytest.raises(InvalidInputError, match="1 media marker"):
        proj.tokenize(_prompt(proj), [])
    with pytest.raises(InvalidInputError, match="0 media marker"):
        proj.tokenize("no marker here", [bmp])
    with pytest.raises(InvalidInputError, match="2 media marker"):
        proj.tokenize(_prompt(proj, 2), [bmp])
    with pytest.raises(InvalidInputError, match="Bitmap objects"):
        proj.tokenize(_prompt(proj), ["not a bitmap"])  # type: ignore[list-item]


def test_encode_refuses_foreign_chunks(model: native.Model, proj: Projector) -> None:
    text = proj.tokenize("just text", [])[0]
    with pytest.raises(InvalidInputError, match="MediaChunk"):
        proj.encode(text)  # type: ignore[arg-type]
    with Projector(model, ensure_model("tiny-vl-mmproj"), PARAMS) as other:
        chunk = other.tokenize(other.marker, [other.bitmap(make_png(8, 8))]).media[0]
        with pytest.raises(InvalidInputError, match="another projector"):
            proj.encode(chunk)


def test_projector_for_another_n_embd_is_refused(model: native.Model) -> None:
    with pytest.raises(ModelLoadError, match=r"mismatch.*n_embd = 64.*n_embd = 128"):
        Projector(model, ensure_model("tiny-vl-mmproj-wide"), PARAMS)


def test_missing_and_non_gguf_projector_files(model: native.Model, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        Projector(model, tmp_path / "missing.gguf", PARAMS)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf at all")
    with pytest.raises(ModelLoadError, match="not a GGUF"):
        Projector(model, junk, PARAMS)
    text_model = Path(model.path)  # a GGUF, but a text model's, not a projector's
    with pytest.raises(ModelLoadError, match="libmtmd could not load"):
        Projector(model, text_model, PARAMS)


def test_truncated_projector_file(model: native.Model, tmp_path: Path) -> None:
    data = ensure_model("tiny-vl-mmproj").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="not a readable GGUF"):  # gguf-py's reader
        Projector(model, cut, PARAMS)
    cut.write_bytes(data[:-100])  # tensor infos intact, the last tensor's data short
    with pytest.raises(ModelLoadError, match=r"could not load|not a readable GGUF"):
        Projector(model, cut, PARAMS)


def test_mlp_projector_without_its_second_layer(model: native.Model, tmp_path: Path) -> None:
    import gguf

    src = gguf.GGUFReader(str(ensure_model("tiny-vl-mmproj")))
    out = tmp_path / "no-mm2.gguf"
    writer = gguf.GGUFWriter(str(out), arch="clip")
    for key, f in src.fields.items():
        if key.startswith("clip.") and f.types[0] != gguf.GGUFValueType.ARRAY:
            writer.add_key_value(key, f.contents(), f.types[0])
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    for t in src.tensors:
        if not t.name.startswith("mm.2."):
            writer.add_tensor(t.name, np.array(t.data).reshape(tuple(reversed(t.shape))))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    # clip.cpp would read mm.2's width through a null pointer: refused before it loads
    with pytest.raises(ModelLoadError, match=r"lacks the tensors mm\.2\.weight, mm\.2\.bias"):
        Projector(model, out, PARAMS)


def test_bad_params_and_closed_projector(model: native.Model) -> None:
    path = ensure_model("tiny-vl-mmproj")
    for bad in (ProjectorParams(n_threads=0), ProjectorParams(flash_attn="sometimes"),
                ProjectorParams(media_marker=""), ProjectorParams(image_max_tokens=0)):
        with pytest.raises(InvalidInputError):
            Projector(model, path, bad)
    p = Projector(model, path, PARAMS)
    p.close()
    with pytest.raises(InvalidInputError, match="closed"):
        p.bitmap(make_png(8, 8))


def test_custom_marker(model: native.Model) -> None:
    params = ProjectorParams(use_gpu=False, n_threads=2, media_marker="<image>")
    with Projector(model, ensure_model("tiny-vl-mmproj"), params) as p:
        assert p.marker == "<image>"
        chunks = p.tokenize("a <image> b", [p.bitmap(make_png(8, 8))])
        assert [type(c) for c in chunks] == [TextChunk, MediaChunk, TextChunk]


def test_decode_embeddings_validation(model: native.Model, proj: Projector) -> None:
    embd = proj.encode(proj.tokenize(proj.marker, [proj.bitmap(make_png(8, 8))]).media[0])
    with native.Context(model, native.ContextParams(n_ctx=32, n_batch=32, n_threads=2)) as ctx:
        cases: list[tuple[object, int, int, str]] = [
            (embd[:, :10], 0, 0, "shape"),
            (embd[:0], 0, 0, "shape"),
            (embd.astype(np.float64), 0, 0, "float32"),
            (np.full_like(embd, np.nan), 0, 0, "NaN"),
            (embd, ctx.n_ctx_seq - 5, 0, "outside the context"),
            (embd, -1, 0, "outside the context"),
            (embd, 0, 3, "sequence id"),
        ]
        for arr, pos0, seq, msg in cases:
            with pytest.raises(InvalidInputError, match=msg):
                decode_embeddings(ctx, arr, pos0, seq)  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match="n_ubatch"):
            small = native.ContextParams(n_ctx=32, n_batch=8, n_ubatch=8, n_threads=2)
            with native.Context(model, small) as c2:
                decode_embeddings(c2, embd, 0, 0, non_causal=True)


def test_bitmap_from_rgb(proj: Projector) -> None:
    from native.testmodels.test_images import pixels

    rgb = pixels(32, 32, 1)
    raw = proj.bitmap_from_rgb(32, 32, rgb)
    assert isinstance(raw, Bitmap) and raw.n_bytes == len(rgb) and len(raw.id) == 64
    assert raw.id == proj.bitmap_from_rgb(32, 32, rgb).id
    with pytest.raises(MediaError, match="expected"):
        proj.bitmap_from_rgb(32, 32, rgb[:-1])
    with pytest.raises(MediaError, match="outside"):
        proj.bitmap_from_rgb(0, 32, b"")


# -- the build -------------------------------------------------------------------------------

def test_build_has_libmtmd_and_its_headers() -> None:
    from native import build

    lib = build.ensure_build()
    assert lib.mtmd_library.exists()
    assert (lib.mtmd_include_dir / "mtmd.h").exists()
    assert (lib.mtmd_include_dir / "mtmd-helper.h").exists()
    assert set(build.MTMD_FLAGS) == {"-DLLAMA_BUILD_MTMD=ON", "-DMTMD_VIDEO=OFF"}


def test_explicit_lib_dir_needs_libmtmd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from native import build

    (tmp_path / "libllama.so").write_bytes(b"")
    monkeypatch.setenv("LLAMA_GRPC_LIB_DIR", str(tmp_path))
    with pytest.raises(build.BuildError, match=r"has no libmtmd\.so.*LLAMA_BUILD_MTMD"):
        build.ensure_build()


def test_encode_from_several_threads(proj: Projector) -> None:
    import threading

    chunks = [proj.tokenize(proj.marker, [proj.bitmap(make_png(32, 32, p))]).media[0]
              for p in range(4)]
    expected = [proj.encode(c) for c in chunks]
    results: dict[int, list[np.ndarray]] = {}

    def work(i: int) -> None:
        results[i] = [proj.encode(c) for c in chunks]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got in results.values():
        assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
    assert len(results) == 3
