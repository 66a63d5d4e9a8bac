"""Build llama-server and llama-batched-bench from the pinned llama.cpp source, cached.

The build goes through native.build.cmake_build, so it shares the pinned source, the base CMake
flags (Release, shared libraries, GGML_NATIVE) and the cache of our own libllama; only the switches
that turn on the common library, the tools and the server are added. The web UI is neither built
nor downloaded: the benchmark never asks for it, and the GPU host has no network.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from native import build, paths

SERVER_FLAGS = (
    "-DLLAMA_BUILD_COMMON=ON",
    "-DLLAMA_BUILD_TOOLS=ON",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
)
# Hopper only: a build for every architecture CUDA knows would take several times as long.
CUDA_FLAGS = ("-DGGML_CUDA=ON", "-DCMAKE_CUDA_ARCHITECTURES=90")
TARGETS = ("llama-server", "llama-batched-bench")


@dataclass(frozen=True)
class ServerBuild:
    """The binaries of one cached build tree, and the directory holding its shared libraries."""

    root: Path

    @property
    def bin_dir(self) -> Path:
        return self.root / "build" / "bin"

    @property
    def llama_server(self) -> Path:
        return self.bin_dir / "llama-server"

    @property
    def batched_bench(self) -> Path:
        return self.bin_dir / "llama-batched-bench"

    @property
    def libllama_dir(self) -> Path:
        """Where this tree's libllama.so lies (CMake puts shared libraries next to the tools)."""
        return self.bin_dir


def _flags_and_label(cuda: bool) -> tuple[tuple[str, ...], str]:
    return SERVER_FLAGS + (CUDA_FLAGS if cuda else ()), "llama-server-cuda" if cuda else \
        "llama-server"


def cached_server_build(cuda: bool = False) -> ServerBuild | None:
    """The finished build if it is already in the cache, without building anything."""
    flags, label = _flags_and_label(cuda)
    key = build.build_key(flags, TARGETS)
    root = paths.builds_dir() / f"{label}-{paths.LLAMA_CPP_PYTHON_VERSION}-{key}"
    found = ServerBuild(root)
    return found if (root / ".complete").exists() and found.llama_server.exists() else None


def ensure_server_build(cuda: bool = False) -> ServerBuild:
    """The cached llama-server build for this host (built on first use: minutes)."""
    flags, label = _flags_and_label(cuda)
    root = build.cmake_build(flags, TARGETS, label)
    found = ServerBuild(root)
    for binary in (found.llama_server, found.batched_bench):
        if not binary.exists():
            raise build.BuildError(f"{root} finished without {binary.name}; remove it and retry")
    return found
