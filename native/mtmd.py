"""libmtmd's handles: a multimodal projector (--mmproj) loaded for a text model, media bitmaps,
tokenized chunks, and encoding a media chunk into embeddings.

    proj = Projector(model, mmproj_path, ProjectorParams(use_gpu=False, n_threads=2))
    image = proj.bitmap(png_bytes)                       # header checked before decoding
    chunks = proj.tokenize(f"look: {proj.marker} what is it?", [image])
    for chunk in chunks:                                 # TextChunk | MediaChunk, in order
        ...                                              # text: chunk.tokens; media: encode
    embd = proj.encode(media_chunk)                      # float32 (n_tokens, n_embd)

native.mtmd_decode puts the embeddings into a llama_context. Every input is checked here before
the native call: llama.cpp aborts the process on some invalid ones. Objects are freed by the
garbage collector (ffi.gc) or, for a Projector, by close(); a Projector keeps its Model alive.
A Projector's methods are safe from several threads (one lock: libmtmd's encoder is not).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from native._ffi import captured_log, ensure_initialised, ffi, lib
from native.errors import InvalidInputError, LlamaError, ModelLoadError
from native.media_probe import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, MediaError, probe
from native.model import Model
from native.passing_thread import run_on_passing_thread

__all__ = ["Bitmap", "Chunks", "MediaChunk", "MediaError", "MtmdError", "Projector",
           "ProjectorParams", "TextChunk", "default_marker"]

_FLASH_ATTN = {"auto": lib.LLAMA_FLASH_ATTN_TYPE_AUTO, "on": lib.LLAMA_FLASH_ATTN_TYPE_ENABLED,
               "off": lib.LLAMA_FLASH_ATTN_TYPE_DISABLED}
_log_lock = threading.Lock()
_log_routed = [False]


class MtmdError(LlamaError):
    """libmtmd failed on input that passed our checks (its log line is in the message)."""


def _route_log() -> None:
    # libmtmd and clip.cpp log to stderr until told otherwise; send them to `logging` as
    # libllama's lines go (native._ffi), so captured_log() sees their error lines too.
    with _log_lock:
        if not _log_routed[0]:
            ensure_initialised()
            lib.mtmd_helper_log_set(lib._llama_grpc_log_callback, ffi.NULL)
            _log_routed[0] = True


def _last_error(lines: list[str]) -> str:
    """The most telling line libmtmd logged: its last error-looking one, else its last."""
    for line in reversed(lines):
        if "error" in line.lower() or "mismatch" in line.lower() or "failed" in line.lower():
            return line.strip()
    return lines[-1].strip() if lines else "no detail logged"


def default_marker() -> str:
    """libmtmd's default media marker (what a prompt holds where a medium goes)."""
    return str(ffi.string(lib.mtmd_default_marker()).decode())


@dataclass(frozen=True)
class ProjectorParams:
    """How to load a projector: llama-server's --no-mmproj-offload is use_gpu=False."""

    use_gpu: bool = True
    n_threads: int = 4
    media_marker: str | None = None  # None: libmtmd's default, default_marker()
    flash_attn: str = "auto"  # auto | on | off
    warmup: bool = True  # one encode at load, so the first request does not pay for it
    image_min_tokens: int | None = None  # None: the projector's metadata decides
    image_max_tokens: int | None = None


def _check_projector_file(path: Path) -> None:
    if not path.is_file():
        raise ModelLoadError(f"projector file {path} does not exist or is not a file")
    if not os.access(path, os.R_OK):
        raise ModelLoadError(f"projector file {path} is not readable")
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise ModelLoadError(f"projector file {path} is not a GGUF file")
    _check_projector_tensors(path)


# clip.cpp reads these projectors' output width through a tensor it loads as optional: a file
# without it crashes the process (a null pointer) instead of failing the load.
_REQUIRED_TENSORS = {"mlp": ("mm.0.weight", "mm.0.bias", "mm.2.weight", "mm.2.bias")}


def _check_projector_tensors(path: Path) -> None:
    try:
        reader = gguf.GGUFReader(str(path))
        field_ = reader.get_field("clip.projector_type")
        proj_type = str(field_.contents()) if field_ is not None else ""
        names = {t.name for t in reader.tensors}
    except Exception as exc:  # gguf raises ValueError, struct.error, IndexError, ...
        raise ModelLoadError(f"projector file {path} is not a readable GGUF: {exc}") from exc
    missing = [n for n in _REQUIRED_TENSORS.get(proj_type, ()) if n not in names]
    if missing:
        raise ModelLoadError(f"projector file {path} of type {proj_type!r} lacks the tensors "
                             f"{', '.join(missing)}")


def _check_params(p: ProjectorParams) -> None:
    if p.n_threads < 1:
        raise InvalidInputError(f"n_threads must be >= 1, not {p.n_threads}")
    if p.flash_attn not in _FLASH_ATTN:
        raise InvalidInputError(f"flash_attn must be one of {sorted(_FLASH_ATTN)}")
    if p.media_marker is not None and (not p.media_marker or "\0" in p.media_marker):
        raise InvalidInputError("media_marker must be a non-empty string without NUL")
    for name in ("image_min_tokens", "image_max_tokens"):
        value = getattr(p, name)
        if value is not None and value < 1:
            raise InvalidInputError(f"{name} must be >= 1, not {value}")


class Bitmap:
    """One decoded medium (RGB image or mono PCM audio), ready for Projector.tokenize()."""

    def __init__(self, ptr: Any, owner: Projector) -> None:
        self._ptr = ffi.gc(ptr, lib.mtmd_bitmap_free)
        self._owner = owner
        self.is_audio = bool(lib.mtmd_bitmap_is_audio(ptr))
        self.width = int(lib.mtmd_bitmap_get_nx(ptr))  # audio: the number of samples
        self.height = int(lib.mtmd_bitmap_get_ny(ptr))
        self.n_bytes = int(lib.mtmd_bitmap_get_n_bytes(ptr))
        raw = lib.mtmd_bitmap_get_id(ptr)
        # sha256 of the encoded bytes (libmtmd's helper): the key of caches across requests.
        self.id = ffi.string(raw).decode() if raw != ffi.NULL else ""

    @property
    def ptr(self) -> Any:
        return self._ptr


@dataclass(frozen=True)
class TextChunk:
    """A run of text tokens, decoded as usual."""

    tokens: tuple[int, ...]

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @property
    def n_pos(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True, eq=False)
class MediaChunk:
    """One medium's place in the prompt: n_tokens embeddings taking n_pos positions (they
    differ under M-RoPE). `id` is the medium's sha256: equal ids mean equal embeddings."""

    kind: str  # "image" | "audio"
    n_tokens: int
    n_pos: int
    id: str
    non_causal: bool  # decode its embeddings with non-causal attention (mtmd_decode does)
    _ptr: Any = field(repr=False)
    _owner: Projector = field(repr=False)

    def decoder_positions(self, pos0: int) -> np.ndarray:
        """M-RoPE positions of the chunk's embeddings from position pos0: int32 (n_tokens, 4)
        rows of (t, x, y, z), as libmtmd computes them. Only for projectors with uses_mrope."""
        if not self._owner.uses_mrope:
            raise InvalidInputError("decoder positions exist only for M-RoPE text models")
        if pos0 < 0:
            raise InvalidInputError(f"pos0 must be >= 0, not {pos0}")
        out = np.empty((self.n_tokens, 4), dtype=np.int32)
        if self.kind == "audio":  # audio advances all sections together (libmtmd's helper)
            out[:] = np.arange(pos0, pos0 + self.n_tokens, dtype=np.int32)[:, None]
            out[:, 3] = 0
            return out
        image = lib.mtmd_input_chunk_get_tokens_image(self._ptr)
        if image == ffi.NULL:
            raise MtmdError("image chunk without image tokens")
        for i in range(self.n_tokens):
            p = lib.mtmd_image_tokens_get_decoder_pos(image, pos0, i)
            out[i] = (p.t, p.x, p.y, p.z)
        return out


class Chunks:
    """A tokenized prompt: TextChunk and MediaChunk in prompt order."""

    def __init__(self, items: list[TextChunk | MediaChunk]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[TextChunk | MediaChunk]:
        return iter(self.items)

    def __getitem__(self, i: int) -> TextChunk | MediaChunk:
        return self.items[i]

    @property
    def n_tokens(self) -> int:
        return sum(c.n_tokens for c in self.items)

    @property
    def n_pos(self) -> int:
        return sum(c.n_pos for c in self.items)

    @property
    def media(self) -> list[MediaChunk]:
        return [c for c in self.items if isinstance(c, MediaChunk)]


class Projector:
    """An mtmd_context: the projector GGUF at `path`, loaded for the text model `model`."""

    def __init__(self, model: Model, path: str | os.PathLike[str],
                 params: ProjectorParams | None = None) -> None:
        self._ptr: Any = ffi.NULL
        self.model = model  # libmtmd keeps the model's vocabulary: the model must outlive us
        self.path = Path(path)
        self.params = p = params or ProjectorParams()
        _check_params(p)
        _check_projector_file(self.path)
        _route_log()
        c = lib.mtmd_context_params_default()
        c.use_gpu = p.use_gpu
        c.print_timings = False
        c.n_threads = p.n_threads
        c.flash_attn_type = _FLASH_ATTN[p.flash_attn]
        c.warmup = p.warmup
        if p.image_min_tokens is not None:
            c.image_min_tokens = p.image_min_tokens
        if p.image_max_tokens is not None:
            c.image_max_tokens = p.image_max_tokens
        marker = ffi.new("char[]", p.media_marker.encode()) if p.media_marker else ffi.NULL
        if marker != ffi.NULL:
            c.media_marker = marker
        def init() -> tuple[Any, list[str]]:  # its warm-up encodes
            with captured_log() as lines:
                return lib.mtmd_init_from_file(str(self.path).encode(), model.ptr, c), lines

        ptr, lines = run_on_passing_thread(init)
        if ptr == ffi.NULL:
            raise ModelLoadError(f"libmtmd could not load the projector {self.path}: "
                                 f"{_last_error(lines)}")
        self._ptr = ptr
        self._lock = threading.Lock()
        self.supports_vision = bool(lib.mtmd_support_vision(ptr))
        self.supports_audio = bool(lib.mtmd_support_audio(ptr))
        self.audio_sample_rate = int(lib.mtmd_get_audio_sample_rate(ptr))  # -1: no audio
        self.marker = str(ffi.string(lib.mtmd_get_marker(ptr)).decode())
        self.uses_mrope = bool(lib.mtmd_decode_use_mrope(ptr))
        # The width of the embeddings encode() returns; libmtmd refused a projector whose
        # output width is not the text model's input width at load.
        self.n_embd = int(lib.llama_model_n_embd_inp(model.ptr))

    @property
    def ptr(self) -> Any:
        if self._ptr == ffi.NULL:
            raise InvalidInputError("projector is closed")
        return self._ptr

    def close(self) -> None:
        if self._ptr != ffi.NULL:
            with self._lock:
                lib.mtmd_free(self._ptr)
                self._ptr = ffi.NULL

    def __enter__(self) -> Projector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_ptr", ffi.NULL) != ffi.NULL:
            lib.mtmd_free(self._ptr)
            self._ptr = ffi.NULL

    # -- media -------------------------------------------------------------------------------
    def bitmap(self, data: bytes, max_side: int = MAX_IMAGE_SIDE,
               max_pixels: int = MAX_IMAGE_PIXELS) -> Bitmap:
        """Decode an encoded image (PNG, JPEG, GIF, BMP, PNM) or audio file (WAV, MP3, FLAC).
        MediaError, before any decoding, for what native.media_probe refuses (empty, unknown
        format, a declared size over the limits) and for a kind this projector cannot take;
        MediaError after, for what the decoder rejects (corrupt or truncated data)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidInputError(f"media must be bytes, not {type(data).__name__}")
        data = bytes(data)
        info = probe(data, max_side, max_pixels)
        if info.kind == "image" and not self.supports_vision:
            raise MediaError("this projector does not take images")
        if info.kind == "audio" and not self.supports_audio:
            raise MediaError("this projector does not take audio")
        opt = lib.mtmd_helper_init_opt_default()
        with captured_log() as lines:
            wrapper = lib.mtmd_helper_bitmap_init_from_buf(self.ptr, data, len(data), False, opt)
        if wrapper.bitmap == ffi.NULL:
            raise MediaError(f"could not decode the {info.format} {info.kind} (corrupt or "
                             f"truncated data): {_last_error(lines)}")
        return Bitmap(wrapper.bitmap, self)

    def bitmap_from_rgb(self, width: int, height: int, rgb: bytes) -> Bitmap:
        """An image from raw RGB bytes (width * height * 3 of them), without any decoder."""
        if not self.supports_vision:
            raise MediaError("this projector does not take images")
        if not (0 < width <= MAX_IMAGE_SIDE and 0 < height <= MAX_IMAGE_SIDE
                and width * height <= MAX_IMAGE_PIXELS):
            raise MediaError(f"image size {width} x {height} outside the limits")
        if len(rgb) != width * height * 3:
            raise MediaError(f"{len(rgb)} bytes for a {width} x {height} RGB image, "
                             f"expected {width * height * 3}")
        ptr = lib.mtmd_bitmap_init(width, height, rgb)
        if ptr == ffi.NULL:
            raise MtmdError("mtmd_bitmap_init failed")
        # The id libmtmd's helper would give encoded bytes, here of the pixels and their size.
        digest = hashlib.sha256(f"{width}x{height}:".encode() + rgb).hexdigest()
        lib.mtmd_bitmap_set_id(ptr, digest.encode())
        return Bitmap(ptr, self)

    # -- prompts -----------------------------------------------------------------------------
    def tokenize(self, text: str, bitmaps: Sequence[Bitmap], add_special: bool = True,
                 parse_special: bool = True) -> Chunks:
        """Split `text` at its media markers, one bitmap per marker in order, into chunks."""
        n_markers = text.count(self.marker)
        if n_markers != len(bitmaps):
            raise InvalidInputError(f"the prompt has {n_markers} media marker(s) "
                                    f"({self.marker!r}) for {len(bitmaps)} medium/media")
        for b in bitmaps:
            if not isinstance(b, Bitmap):
                raise InvalidInputError("bitmaps must be Bitmap objects from Projector.bitmap")
        raw = text.encode("utf-8")
        buf = ffi.new("char[]", raw)
        itext = ffi.new("mtmd_input_text *", {"text": buf, "text_len": len(raw),
                                              "add_special": add_special,
                                              "parse_special": parse_special})
        arr = ffi.new("mtmd_bitmap *[]", [b.ptr for b in bitmaps] or [ffi.NULL])
        chunks = ffi.gc(lib.mtmd_input_chunks_init(), lib.mtmd_input_chunks_free)
        with self._lock, captured_log() as lines:
            rc = int(lib.mtmd_tokenize(self.ptr, chunks, itext, arr, len(bitmaps)))
        if rc != 0:
            raise MtmdError(f"mtmd_tokenize failed (code {rc}): {_last_error(lines)}")
        return Chunks([self._chunk(lib.mtmd_input_chunks_get(chunks, i))
                       for i in range(int(lib.mtmd_input_chunks_size(chunks)))])

    def _chunk(self, c: Any) -> TextChunk | MediaChunk:
        kind = int(lib.mtmd_input_chunk_get_type(c))
        if kind == lib.MTMD_INPUT_CHUNK_TYPE_TEXT:
            n = ffi.new("size_t *")
            toks = lib.mtmd_input_chunk_get_tokens_text(c, n)
            return TextChunk(tuple(ffi.unpack(toks, int(n[0]))) if n[0] else ())
        # A copy outlives the Chunks list: the scheduler may encode it much later.
        own = ffi.gc(lib.mtmd_input_chunk_copy(c), lib.mtmd_input_chunk_free)
        raw_id = lib.mtmd_input_chunk_get_id(c)
        return MediaChunk(
            kind="image" if kind == lib.MTMD_INPUT_CHUNK_TYPE_IMAGE else "audio",
            n_tokens=int(lib.mtmd_input_chunk_get_n_tokens(c)),
            n_pos=int(lib.mtmd_input_chunk_get_n_pos(c)),
            id=ffi.string(raw_id).decode() if raw_id != ffi.NULL else "",
            non_causal=bool(lib.mtmd_decode_use_non_causal(self.ptr, c)),
            _ptr=own, _owner=self)

    def encode(self, chunk: MediaChunk) -> np.ndarray:
        """The chunk's embeddings: a new float32 array (n_tokens, n_embd)."""
        if not isinstance(chunk, MediaChunk):
            raise InvalidInputError("only a MediaChunk is encoded (text chunks are tokens)")
        if chunk._owner is not self:
            raise InvalidInputError("the chunk was tokenized by another projector")
        with self._lock:
            embd = run_on_passing_thread(lambda: self._encode(chunk))
        return embd.reshape(chunk.n_tokens, self.n_embd)

    def _encode(self, chunk: MediaChunk) -> np.ndarray:
        with captured_log() as lines:
            rc = int(lib.mtmd_encode_chunk(self.ptr, chunk._ptr))
            if rc != 0:
                raise MtmdError(f"mtmd_encode_chunk failed (code {rc}): {_last_error(lines)}")
        out = lib.mtmd_get_output_embd(self.ptr)
        n = chunk.n_tokens * self.n_embd
        return np.frombuffer(ffi.buffer(out, n * 4), dtype=np.float32).copy()
