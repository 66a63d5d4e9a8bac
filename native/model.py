"""A loaded GGUF model: owns its llama_model handle, exposes metadata, vocabulary and templates."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from native._ffi import captured_log, ensure_initialised, ffi, lib
from native.buffers import BufferSize, parse_buffer_sizes
from native.errors import InvalidInputError, ModelLoadError
from native.vocab import Vocab

_log = logging.getLogger(__name__)
_GGUF_MAGIC = b"GGUF"

ProgressCallback = Callable[[float], bool | None]
"""Called with 0.0..1.0 while a model loads; returning False aborts the load."""


SPLIT_MODES = ("none", "layer", "row", "tensor")
LAZY_MODES = ("off", "auto", "on")
# llama_load_mode by the names of llama-server's --load-mode.
LOAD_MODES = {"auto": "AUTO", "none": "NONE", "mmap": "MMAP", "mlock": "MLOCK",
              "mmap+mlock": "MMAP_MLOCK", "dio": "DIRECT_IO"}


@dataclass(frozen=True)
class ModelParams:
    n_gpu_layers: int = 0  # -1: all layers
    main_gpu: int = 0
    split_mode: str = "layer"  # one of SPLIT_MODES; only matters with several GPUs
    tensor_split: tuple[float, ...] = ()  # share of the model per GPU; (): llama.cpp's own split
    use_mmap: bool = True
    use_mlock: bool = False
    load_mode: str | None = None  # one of LOAD_MODES; when set, it replaces use_mmap/use_mlock
    lazy_mode: str = "auto"  # one of LAZY_MODES: on-demand reading of tensors the arch marks
    check_tensors: bool = False
    use_extra_bufts: bool = True  # extra buffer types, i.e. weight repacking for CPU kernels
    no_host: bool = False  # bypass the host buffer so that extra buffer types can be used
    vocab_only: bool = False


def _split_mode(name: str) -> int:
    if name not in SPLIT_MODES:
        raise InvalidInputError(f"invalid split mode {name!r}; one of {SPLIT_MODES}")
    return int(getattr(lib, f"LLAMA_SPLIT_MODE_{name.upper()}"))


def _lazy_mode(name: str) -> int:
    if name not in LAZY_MODES:
        raise InvalidInputError(f"invalid lazy mode {name!r}; one of {LAZY_MODES}")
    return int(getattr(lib, f"LLAMA_LAZY_MODE_{name.upper()}"))


def _tensor_split(shares: tuple[float, ...]) -> Any:
    """The float[llama_max_devices()] llama.cpp reads whole, or NULL for its default split."""
    if not shares:
        return ffi.NULL
    n_max = int(lib.llama_max_devices())
    if len(shares) > n_max:
        raise InvalidInputError(
            f"tensor split has {len(shares)} entries; this build supports {n_max} devices")
    if not all(math.isfinite(x) and x >= 0 for x in shares):
        raise InvalidInputError(f"tensor split {list(shares)}: shares must be finite and >= 0")
    return ffi.new("float[]", list(shares) + [0.0] * (n_max - len(shares)))


def _load_mode(params: ModelParams) -> int:
    if params.load_mode is not None:
        if params.load_mode not in LOAD_MODES:
            raise InvalidInputError(
                f"invalid load mode {params.load_mode!r}; one of {tuple(LOAD_MODES)}")
        return int(getattr(lib, f"LLAMA_LOAD_MODE_{LOAD_MODES[params.load_mode]}"))
    if params.use_mmap and params.use_mlock:
        return int(lib.LLAMA_LOAD_MODE_MMAP_MLOCK)
    if params.use_mmap:
        return int(lib.LLAMA_LOAD_MODE_MMAP)
    if params.use_mlock:
        return int(lib.LLAMA_LOAD_MODE_MLOCK)
    return int(lib.LLAMA_LOAD_MODE_NONE)


def _check_file(path: Path) -> None:
    # llama.cpp's errors for these cases are log lines and a NULL; say plainly what is wrong.
    if not path.exists():
        raise ModelLoadError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelLoadError(f"model path is not a file: {path}")
    if not os.access(path, os.R_OK):
        raise ModelLoadError(f"model file is not readable: {path}")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != _GGUF_MAGIC:
        raise ModelLoadError(f"not a GGUF file (magic {magic!r}, expected b'GGUF'): {path}")


class Model:
    """A llama_model. Free it with close() or a `with` block; contexts keep it alive meanwhile."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        params: ModelParams | None = None,
        progress: ProgressCallback | None = None,
    ) -> None:
        self.path = Path(path)
        self.params = params or ModelParams()
        self._ptr: Any = ffi.NULL
        _check_file(self.path)
        ensure_initialised()
        p = self.params
        if p.main_gpu < 0:
            raise InvalidInputError(f"main_gpu must be >= 0, not {p.main_gpu}")
        tensor_split = _tensor_split(p.tensor_split)  # must live until the load returns
        cparams = lib.llama_model_default_params()
        cparams.n_gpu_layers = p.n_gpu_layers
        cparams.main_gpu = p.main_gpu
        cparams.split_mode = _split_mode(p.split_mode)
        cparams.tensor_split = tensor_split
        cparams.load_mode = _load_mode(p)
        cparams.lazy_mode = _lazy_mode(p.lazy_mode)
        cparams.check_tensors = p.check_tensors
        cparams.use_extra_bufts = p.use_extra_bufts
        cparams.no_host = p.no_host
        cparams.vocab_only = p.vocab_only
        handle = ffi.NULL
        if progress is not None:
            handle = ffi.new_handle(progress)
            cparams.progress_callback = lib._llama_grpc_progress_callback
            cparams.progress_callback_user_data = handle
        with captured_log() as lines:
            ptr = lib.llama_model_load_from_file(str(self.path).encode(), cparams)
        # The weights' buffers by type, as llama.cpp logged them (llama.h does not tell).
        self.buffers: tuple[BufferSize, ...] = parse_buffer_sizes(lines)
        if ptr == ffi.NULL:
            raise ModelLoadError(
                f"llama.cpp could not load {self.path} (corrupt or truncated file, unsupported "
                "architecture, or the load was aborted); its log above says which"
            )
        self._ptr = ptr
        self.vocab = Vocab(lib.llama_model_get_vocab(ptr), owner=self)

    @property
    def ptr(self) -> Any:
        if self._ptr == ffi.NULL:
            raise ValueError("model is closed")
        return self._ptr

    def close(self) -> None:
        if self._ptr != ffi.NULL:
            lib.llama_model_free(self._ptr)
            self._ptr = ffi.NULL

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    # -- shape ------------------------------------------------------------------------------
    @property
    def n_ctx_train(self) -> int:
        return int(lib.llama_model_n_ctx_train(self.ptr))

    @property
    def n_embd(self) -> int:
        return int(lib.llama_model_n_embd(self.ptr))

    @property
    def n_embd_out(self) -> int:
        return int(lib.llama_model_n_embd_out(self.ptr))

    @property
    def n_layer(self) -> int:
        return int(lib.llama_model_n_layer(self.ptr))

    @property
    def n_head(self) -> int:
        return int(lib.llama_model_n_head(self.ptr))

    @property
    def n_head_kv(self) -> int:
        return int(lib.llama_model_n_head_kv(self.ptr))

    @property
    def n_params(self) -> int:
        return int(lib.llama_model_n_params(self.ptr))

    @property
    def size(self) -> int:
        return int(lib.llama_model_size(self.ptr))

    @property
    def n_cls_out(self) -> int:
        return int(lib.llama_model_n_cls_out(self.ptr))

    @property
    def has_encoder(self) -> bool:
        return bool(lib.llama_model_has_encoder(self.ptr))

    @property
    def has_decoder(self) -> bool:
        return bool(lib.llama_model_has_decoder(self.ptr))

    @property
    def is_recurrent(self) -> bool:
        return bool(lib.llama_model_is_recurrent(self.ptr))

    def description(self) -> str:
        buf = ffi.new("char[]", 256)
        n = lib.llama_model_desc(self.ptr, buf, 256)
        return bytes(ffi.buffer(buf, max(min(n, 255), 0))).decode("utf-8", "replace")

    def ftype_name(self) -> str:
        return str(ffi.string(lib.llama_ftype_name(lib.llama_model_ftype(self.ptr))).decode())

    # -- metadata ---------------------------------------------------------------------------
    @staticmethod
    def _read_str(fn: Callable[[Any, int], int]) -> str:
        size = 256
        while True:
            buf = ffi.new("char[]", size)
            n = int(fn(buf, size))
            if n < 0:
                raise KeyError("metadata entry not found")
            if n < size:
                return bytes(ffi.buffer(buf, n)).decode("utf-8", "replace")
            size = n + 1

    def metadata(self) -> dict[str, str]:
        """Every GGUF key/value pair, values as llama.cpp formats them (arrays abbreviated)."""
        out: dict[str, str] = {}
        ptr = self.ptr
        for i in range(int(lib.llama_model_meta_count(ptr))):
            def key_at(buf: Any, size: int, i: int = i) -> int:
                return int(lib.llama_model_meta_key_by_index(ptr, i, buf, size))

            def value_at(buf: Any, size: int, i: int = i) -> int:
                return int(lib.llama_model_meta_val_str_by_index(ptr, i, buf, size))

            out[self._read_str(key_at)] = self._read_str(value_at)
        return out

    def meta_value(self, key: str) -> str | None:
        try:
            return self._read_str(
                lambda b, n: lib.llama_model_meta_val_str(self.ptr, key.encode(), b, n))
        except KeyError:
            return None

    def chat_template(self, name: str | None = None) -> str | None:
        """The model's chat template (tokenizer.chat_template, or a named one), if it has one."""
        p = lib.llama_model_chat_template(self.ptr, name.encode() if name else ffi.NULL)
        if p == ffi.NULL:
            return None
        raw: bytes = ffi.string(p)
        return raw.decode("utf-8", "replace")
