"""LoRA adapters loaded against a model; applied to a context with Context.set_lora_adapters."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from native._ffi import ffi, lib
from native.errors import ModelLoadError
from native.model import Model


class LoraAdapter:
    def __init__(self, model: Model, path: str | os.PathLike[str]) -> None:
        self.model = model  # adapters must not outlive their model
        self.path = Path(path)
        self._ptr: Any = ffi.NULL
        if not self.path.is_file():
            raise ModelLoadError(f"LoRA adapter not found: {self.path}")
        ptr = lib.llama_adapter_lora_init(model.ptr, os.fsencode(self.path))
        if ptr == ffi.NULL:
            raise ModelLoadError(f"llama.cpp could not load the LoRA adapter {self.path}")
        self._ptr = ptr

    @property
    def ptr(self) -> Any:
        if self._ptr == ffi.NULL:
            raise ValueError("adapter is closed")
        return self._ptr

    def close(self) -> None:
        # llama.cpp frees a model's adapters with the model: after Model.close() the pointer
        # is already gone and must not be freed again.
        if self._ptr != ffi.NULL:
            if self.model._ptr != ffi.NULL:
                lib.llama_adapter_lora_free(self._ptr)
            self._ptr = ffi.NULL

    def __del__(self) -> None:
        self.close()

    def meta_value(self, key: str) -> str | None:
        buf = ffi.new("char[]", 512)
        n = int(lib.llama_adapter_meta_val_str(self.ptr, key.encode(), buf, 512))
        return None if n < 0 else bytes(ffi.buffer(buf, min(n, 511))).decode("utf-8", "replace")
