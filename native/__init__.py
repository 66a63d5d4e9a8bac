"""llama.cpp for Python through cffi: the pinned build, the binding and objects owning C handles.

`from native import Model, Context, ...` works once the extension is built; the names load
lazily so that the build tools (native.build, native.cffi_build) import without it. Only
native._ffi touches the compiled extension.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the real names for type checkers; at run time they load lazily
    from native.batch import Batch
    from native.context import Context, ContextParams
    from native.errors import (
        BindingError,
        ContextError,
        DecodeError,
        InvalidInputError,
        LlamaError,
        ModelLoadError,
        SamplerError,
        StateError,
        TokenizeError,
    )
    from native.lora import LoraAdapter
    from native.model import Model, ModelParams
    from native.sampler import SamplerChain
    from native.vocab import Vocab

_EXPORTS = {
    "Batch": "native.batch",
    "Context": "native.context",
    "ContextParams": "native.context",
    "LoraAdapter": "native.lora",
    "Model": "native.model",
    "ModelParams": "native.model",
    "SamplerChain": "native.sampler",
    "Vocab": "native.vocab",
    "BindingError": "native.errors",
    "ContextError": "native.errors",
    "DecodeError": "native.errors",
    "InvalidInputError": "native.errors",
    "LlamaError": "native.errors",
    "ModelLoadError": "native.errors",
    "SamplerError": "native.errors",
    "StateError": "native.errors",
    "TokenizeError": "native.errors",
}

# Load libllama as early as possible: on the GPU image (CUDA build, Python 3.12 wheels)
# llama_model_load_from_file crashed with SIGSEGV when numpy (bundling OpenBLAS and
# libgfortran) or grpc's extension had been loaded first. Build tools import this
# package before the extension exists, so its absence is not an error here.
with contextlib.suppress(Exception):  # the lazy imports below raise the real error later
    from native import _ffi as _ffi

__all__ = [
    "Batch", "BindingError", "Context", "ContextError", "ContextParams", "DecodeError",
    "InvalidInputError", "LlamaError", "LoraAdapter", "Model", "ModelLoadError", "ModelParams",
    "SamplerChain", "SamplerError", "StateError", "TokenizeError", "Vocab",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'native' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
