"""Where the project keeps what it builds and generates: outside the work tree, shared by checkouts.

Everything slow to make (the llama.cpp source, its build, generated models) lives under one cache
root so that a second set-up, or a fresh clone on the same machine, takes seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
# sha256 of llama_cpp_python-0.3.36.tar.gz as served by PyPI: the only route to llama.cpp's source.
LLAMA_CPP_PYTHON_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_root() -> Path:
    """The cache directory: $LLAMA_GRPC_CACHE, else $XDG_CACHE_HOME/llama-grpc, else ~/.cache/..."""
    explicit = os.environ.get("LLAMA_GRPC_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "llama-grpc"


def sdist_dir() -> Path:
    return cache_root() / "sdist"


def source_dir() -> Path:
    """The extracted llama.cpp tree (vendor/llama.cpp of the pinned sdist)."""
    return cache_root() / f"llama.cpp-src-{LLAMA_CPP_PYTHON_VERSION}"


def builds_dir() -> Path:
    return cache_root() / "builds"


def models_dir() -> Path:
    return cache_root() / "models"
