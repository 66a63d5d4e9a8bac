"""Compile the cffi extension `native._llama_cffi` against the pinned llama.h (API mode).

    python -m native.cffi_build [--cuda] [--force]

API mode means a C compiler checks every declaration in native/_cffi_src against the real header.
The extension records a fingerprint (declarations, library path) that native._ffi checks at
import, so a stale or mismatched build fails loudly instead of misbehaving. Recompiles only when
the fingerprint changes.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path
from typing import Any

from native import build
from native._cffi_src import declarations, declarations_digest, helper_sources

MODULE_NAME = "native._llama_cffi"
_PACKAGE_DIR = Path(__file__).resolve().parent


def fingerprint(lib: build.LlamaBuild) -> str:
    """What the extension records: the declarations it was compiled from and the library dir."""
    return f"{declarations_digest()}:{lib.lib_dir.resolve()}"


def _compiled_fingerprint() -> str | None:
    """The fingerprint of the extension on disk, read without importing native._ffi."""
    if importlib.util.find_spec(MODULE_NAME) is None:
        return None
    try:
        ext: Any = importlib.import_module(MODULE_NAME)
    except ImportError:
        return None
    return str(ext.ffi.string(ext.lib.llama_grpc_binding_fingerprint()).decode())


def compile_extension(lib: build.LlamaBuild) -> Path:
    from cffi import FFI

    ffibuilder = FFI()
    ffibuilder.cdef(declarations())
    fp = fingerprint(lib)
    source = (
        '#include "llama.h"\n'
        '#include "mtmd.h"\n'
        '#include "mtmd-helper.h"\n'
        f'static const char *llama_grpc_fp = "{fp}";\n'
        "const char * llama_grpc_binding_fingerprint(void) { return llama_grpc_fp; }\n"
        + helper_sources()
    )
    ffibuilder.set_source(
        MODULE_NAME,
        source,
        include_dirs=list(dict.fromkeys([str(lib.include_dir), str(lib.mtmd_include_dir)])),
        library_dirs=[str(lib.lib_dir)],
        libraries=["mtmd", "llama", "pthread", "m"],
        extra_compile_args=["-O2", "-Werror=implicit-function-declaration"],
        # DT_RPATH (not RUNPATH) so libllama's own dependencies (libggml*) resolve from there too.
        extra_link_args=[f"-Wl,-rpath,{lib.lib_dir.resolve()}", "-Wl,--disable-new-dtags"],
    )
    with tempfile.TemporaryDirectory() as tmp:
        so = Path(ffibuilder.compile(tmpdir=tmp, verbose=False))
        target = _PACKAGE_DIR / so.name
        so.replace(target)
    return target


def ensure_extension(cuda: bool = False, force: bool = False) -> Path | None:
    """Build libllama if needed, then compile the extension unless it is current."""
    lib = build.ensure_build(cuda=cuda)
    if not force and _compiled_fingerprint() == fingerprint(lib):
        return None
    return compile_extension(lib)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuda", action="store_true", help="bind a GGML_CUDA build")
    parser.add_argument("--force", action="store_true", help="recompile even if current")
    args = parser.parse_args(argv)
    try:
        out = ensure_extension(cuda=args.cuda, force=args.force)
    except build.BuildError as e:
        print(f"[native.cffi_build] error: {e}", file=sys.stderr)
        return 1
    print(f"[native.cffi_build] {'compiled ' + str(out) if out else 'extension is current'}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
