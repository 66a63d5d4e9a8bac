"""Fetch the pinned llama.cpp source and build libllama and libmtmd, cached outside the work tree.

    python -m native.build            # CPU build (default)
    python -m native.build --cuda     # GGML_CUDA build, for GPU hosts with the CUDA toolkit

The source comes from the PyPI sdist of llama-cpp-python (pinned by version and sha256), which
carries llama.cpp under vendor/llama.cpp. A build is keyed by that version, the CMake flags and the
host CPU's instruction-set flags (GGML_NATIVE tunes for the build machine), and is reused while its
key matches. LLAMA_GRPC_LIB_DIR points at an existing libllama build instead (its headers are then
taken from LLAMA_GRPC_INCLUDE_DIR, or from the pinned source tree); it must hold libmtmd.so too.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from native import paths

_SDIST_NAME = f"llama_cpp_python-{paths.LLAMA_CPP_PYTHON_VERSION}.tar.gz"
_VENDOR_PREFIX = f"llama_cpp_python-{paths.LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp/"

# Only the library: no common/, tools, examples, tests, server, curl or OpenSSL.
_BASE_FLAGS: tuple[str, ...] = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=ON",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_COMMON=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_TOOLS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_BUILD_APP=OFF",
)
# No AMX in a GGML_NATIVE build: this project's x86 machines (Firecracker VMs) advertise AMX in
# their CPU flags but fault on its first instruction (SIGILL at `tilezero` in ggml-cpu's AMX
# kernel, measured on the first decode). GCC honours an explicit -mno-* over -march=native.
_NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
if platform.machine() in ("x86_64", "AMD64"):
    _BASE_FLAGS += (f"-DCMAKE_C_FLAGS={_NO_AMX}", f"-DCMAKE_CXX_FLAGS={_NO_AMX}")
_CUDA_FLAGS = ("-DGGML_CUDA=ON",)
# libmtmd (tools/mtmd: multimodal projectors) as a shared library beside libllama, standalone:
# without the tools or common/. No video: it would decode through an ffmpeg subprocess.
# Passed as a build's flags rather than in _BASE_FLAGS, so builds that share the base flags
# (bench's llama-server tree) keep their keys.
MTMD_FLAGS = ("-DLLAMA_BUILD_MTMD=ON", "-DMTMD_VIDEO=OFF")


class BuildError(RuntimeError):
    """A step of fetching or building llama.cpp failed; the message says which and what to do."""


@dataclass(frozen=True)
class LlamaBuild:
    """A usable libllama: the directory holding libllama.so and the one holding llama.h."""

    lib_dir: Path
    include_dir: Path

    @property
    def library(self) -> Path:
        return self.lib_dir / "libllama.so"

    @property
    def mtmd_library(self) -> Path:
        return self.lib_dir / "libmtmd.so"

    @property
    def mtmd_include_dir(self) -> Path:
        """Where mtmd.h is: installed beside llama.h, else (a tools build, which installs
        nothing) in the pinned source tree."""
        if (self.include_dir / "mtmd.h").exists():
            return self.include_dir
        return ensure_source() / "tools" / "mtmd"


def _say(msg: str) -> None:
    print(f"[native.build] {msg}", file=sys.stderr, flush=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ensure_sdist() -> Path:
    """The pinned sdist tarball, downloaded with pip once and verified by sha256 every time."""
    target = paths.sdist_dir() / _SDIST_NAME
    if target.exists() and _sha256(target) == paths.LLAMA_CPP_PYTHON_SHA256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    _say(f"downloading llama-cpp-python=={paths.LLAMA_CPP_PYTHON_VERSION} sdist (~76 MB) with pip")
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        # pip prepares an sdist's metadata in an isolated build environment (it fetches the
        # build backend, scikit-build-core, for that); nothing is built or installed.
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               f"llama-cpp-python=={paths.LLAMA_CPP_PYTHON_VERSION}", "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / _SDIST_NAME
        if proc.returncode != 0 or not got.exists():
            raise BuildError(
                "could not download the llama.cpp source (PyPI sdist of llama-cpp-python=="
                f"{paths.LLAMA_CPP_PYTHON_VERSION}).\n{proc.stderr[-2000:]}\n"
                "Check that PyPI is reachable (pip config list), or place the file at "
                f"{target} by hand."
            )
        digest = _sha256(got)
        if digest != paths.LLAMA_CPP_PYTHON_SHA256:
            raise BuildError(
                f"sha256 mismatch for {_SDIST_NAME}: got {digest}, pinned "
                f"{paths.LLAMA_CPP_PYTHON_SHA256}. The registry served a different file; "
                "refusing it."
            )
        got.replace(target)
    return target


def ensure_source() -> Path:
    """The llama.cpp tree extracted from the sdist (only vendor/llama.cpp), extracted once."""
    dest = paths.source_dir()
    if (dest / "include" / "llama.h").exists():
        return dest
    tarball = ensure_sdist()
    _say(f"extracting llama.cpp source to {dest}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp, tarfile.open(tarball) as tar:
        members = []
        for m in tar.getmembers():
            if m.name.startswith(_VENDOR_PREFIX) and len(m.name) > len(_VENDOR_PREFIX):
                m.name = m.name[len(_VENDOR_PREFIX):]
                members.append(m)
        tar.extractall(tmp, members=members, filter="data")
        if dest.exists():
            shutil.rmtree(dest)
        Path(tmp).rename(dest)
        Path(tmp).mkdir()  # TemporaryDirectory wants something to remove
    return dest


def _cpu_signature() -> str:
    """The host's instruction-set flags: a GGML_NATIVE build must not be reused on another CPU."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.machine()} {' '.join(sorted(flags.split()))}"


def build_key(flags: tuple[str, ...], targets: tuple[str, ...]) -> str:
    material = "\n".join([paths.LLAMA_CPP_PYTHON_VERSION, *_BASE_FLAGS, *flags, *targets,
                          _cpu_signature()])
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def _run_logged(cmd: list[str], log: Path, what: str) -> None:
    with log.open("a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise BuildError(
            f"{what} failed (exit {proc.returncode}). Last lines of {log}:\n{tail}\n"
            "Fix: install the toolchain it names (apt-get install cmake ninja-build g++; for "
            "--cuda the CUDA toolkit with nvcc on PATH), then run `python -m native.build` again."
        )


def cmake_build(
    flags: tuple[str, ...], targets: tuple[str, ...] = (), label: str = "libllama"
) -> Path:
    """Configure and build llama.cpp with `flags` into a cached directory; returns that directory.

    The directory holds `build/` (CMake's tree) and, for library builds, `install/`. A finished
    build is marked by `.complete` and reused as is.
    """
    key = build_key(flags, targets)
    root = paths.builds_dir() / f"{label}-{paths.LLAMA_CPP_PYTHON_VERSION}-{key}"
    if (root / ".complete").exists():
        return root
    src = ensure_source()
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise BuildError(f"`{tool}` is not installed; apt-get install cmake g++ and retry")
    root.mkdir(parents=True, exist_ok=True)
    log = root / "build.log"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    jobs = str(os.cpu_count() or 2)
    started = time.monotonic()
    _say(f"building {label} ({' '.join(flags) or 'CPU'}) in {root}; log: {log}")
    _run_logged(["cmake", "-S", str(src), "-B", str(root / "build"), *generator,
                 f"-DCMAKE_INSTALL_PREFIX={root / 'install'}", *_BASE_FLAGS, *flags],
                log, "CMake configure")
    build_cmd = ["cmake", "--build", str(root / "build"), "-j", jobs]
    for t in targets:
        build_cmd += ["--target", t]
    _run_logged(build_cmd, log, "CMake build")
    if not targets:
        _run_logged(["cmake", "--install", str(root / "build")], log, "CMake install")
    (root / ".complete").write_text(f"{time.monotonic() - started:.0f}s\n")
    _say(f"built {label} in {time.monotonic() - started:.0f}s")
    return root


def ensure_build(cuda: bool = False) -> LlamaBuild:
    """A libllama to bind: LLAMA_GRPC_LIB_DIR if set, else the cached build (made if missing)."""
    explicit = os.environ.get("LLAMA_GRPC_LIB_DIR")
    if explicit:
        lib_dir = Path(explicit)
        if not (lib_dir / "libllama.so").exists():
            raise BuildError(f"LLAMA_GRPC_LIB_DIR={lib_dir} has no libllama.so")
        if not (lib_dir / "libmtmd.so").exists():
            raise BuildError(
                f"LLAMA_GRPC_LIB_DIR={lib_dir} has no libmtmd.so; build llama.cpp with "
                "-DLLAMA_BUILD_MTMD=ON (or with its tools), or unset LLAMA_GRPC_LIB_DIR")
        inc = os.environ.get("LLAMA_GRPC_INCLUDE_DIR")
        include_dir = Path(inc) if inc else ensure_source() / "include"
        return LlamaBuild(lib_dir, include_dir)
    root = cmake_build(MTMD_FLAGS + (_CUDA_FLAGS if cuda else ()))
    install = root / "install"
    candidates = [install / d for d in ("lib", "lib64")]
    found = next((d for d in candidates if (d / "libllama.so").exists()), None)
    if found is None or not (found / "libmtmd.so").exists():
        raise BuildError(f"the build in {root} installed no libllama.so or libmtmd.so; remove "
                         f"{root} and retry")
    return LlamaBuild(found, install / "include")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cuda", action="store_true", help="build with GGML_CUDA (needs nvcc)")
    args = parser.parse_args(argv)
    try:
        build = ensure_build(cuda=args.cuda)
    except BuildError as e:
        _say(f"error: {e}")
        return 1
    print(build.lib_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
