"""The one importer of the compiled extension: checks it, initialises llama.cpp, routes its log.

Everything else in the project reaches libllama through `ffi` and `lib` from here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from native.errors import BindingError

try:
    from native._llama_cffi import ffi, lib
except ImportError as exc:  # pragma: no cover - exercised only on a fresh checkout
    raise BindingError(
        f"the cffi extension native._llama_cffi cannot be imported ({exc}); run "
        "`python -m native.cffi_build` (the README's set-up commands do it)"
    ) from exc

__all__ = ["captured_log", "decoding", "ensure_initialised", "ffi", "lib"]

_log = logging.getLogger("llama.cpp")
_init_lock = threading.Lock()
_initialised = False

# ggml log levels -> logging levels; CONT continues the previous record's level.
_LEVELS = {1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}
_partial: list[str] = []
_partial_level = [logging.INFO]
# The interrupt flag (native.context) of the decode running on this thread, if any. llama.cpp
# logs an interrupted decode as an error ("failed to compute graph", "removing memory module
# entries"); for us it is no error, so its lines go to DEBUG once an interrupt was requested.
decoding = threading.local()
# The list collecting this thread's log lines while captured_log() runs on it, if any.
_capture = threading.local()


def _check_fingerprint() -> None:
    from native._cffi_src import declarations_digest

    got = ffi.string(lib.llama_grpc_binding_fingerprint()).decode()
    if got.split(":", 1)[0] != declarations_digest():
        raise BindingError(
            "native._llama_cffi was compiled from other declarations than native/_cffi_src; "
            "run `python -m native.cffi_build`"
        )


@ffi.def_extern()  # type: ignore[untyped-decorator]
def _llama_grpc_log_callback(level: int, text: Any, _user_data: Any) -> None:
    # llama.cpp logs in fragments; emit one record per line.
    msg = ffi.string(text).decode("utf-8", "replace")
    if level != 5:  # GGML_LOG_LEVEL_CONT
        _partial_level[0] = _LEVELS.get(level, logging.INFO)
    _partial.append(msg)
    if msg.endswith("\n"):
        line = "".join(_partial).rstrip("\n")
        _partial.clear()
        if line:
            _log.log(logging.DEBUG if _interrupted() else _partial_level[0], "%s", line)
            sink = getattr(_capture, "lines", None)
            if sink is not None:
                sink.append(line)


def _interrupted() -> bool:
    flag = getattr(decoding, "interrupt_flag", None)
    return flag is not None and bool(lib.llama_grpc_interrupt_pending(flag))


@contextmanager
def captured_log() -> Iterator[list[str]]:
    """The lines llama.cpp logs on this thread meanwhile, collected as they are logged (the
    log itself is unchanged): what llama.h does not return, such as its buffers' sizes
    (native.buffers), llama.cpp only logs."""
    lines: list[str] = []
    outer = getattr(_capture, "lines", None)
    _capture.lines = lines
    try:
        yield lines
    finally:
        _capture.lines = outer
        if outer is not None:  # a capture inside another: the outer one sees the lines too
            outer.extend(lines)


@ffi.def_extern()  # type: ignore[untyped-decorator]
def _llama_grpc_progress_callback(progress: float, user_data: Any) -> bool:
    callback: Callable[[float], bool | None] = ffi.from_handle(user_data)
    try:
        return callback(progress) is not False
    except Exception:  # a failing callback must not unwind through C
        _log.exception("model-load progress callback raised; aborting the load")
        return False


def ensure_initialised() -> None:
    """Initialise the llama.cpp backend once per process and route its log to `logging`."""
    global _initialised
    with _init_lock:
        if _initialised:
            return
        lib.llama_log_set(lib._llama_grpc_log_callback, ffi.NULL)
        lib.llama_backend_init()
        _initialised = True


_check_fingerprint()
