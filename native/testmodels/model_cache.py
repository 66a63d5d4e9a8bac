"""Where generated test models live in the cache, and how a file gets there without half-writes.

A model's file name carries a digest of everything that decides its bytes (generator version,
hyper-parameters, source files), so changing any of them makes a new file instead of reusing a
stale one. Files are written to a temporary name and renamed into place; a lock file serialises
two processes asking for the same model, so the second one waits and then finds the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from native import paths


def cache_key(parameters: dict[str, object]) -> str:
    """A short stable digest of a JSON-able description of what a model file is made from."""
    canonical = json.dumps(parameters, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def model_path(name: str, parameters: dict[str, object]) -> Path:
    """The cache path of model `name` made from `parameters` (which need not exist yet)."""
    return paths.models_dir() / f"{name}-{cache_key(parameters)}.gguf"


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_file(target: Path, write: Callable[[Path], None]) -> Path:
    """Return `target`, first calling `write(tmp_path)` and renaming it into place if missing.

    `write` must create a complete file at the path it is given. A failure leaves no file at
    `target` (and removes the partial temporary file).
    """
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(target.with_name(target.name + ".lock")):
        if target.is_file():  # another process made it while we waited for the lock
            return target
        tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        try:
            write(tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    return target
