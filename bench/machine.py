"""What the benchmark ran on: CPU, cores, memory, GPU, software versions, commit."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

from native import paths


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / (1 << 20), 1)
    except OSError:
        pass
    return 0.0


def _run(cmd: list[str]) -> str:
    if shutil.which(cmd[0]) is None:
        return ""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""


def _versions() -> dict[str, str]:
    from importlib import metadata

    found = {}
    # uvloop and httptools: uvicorn serves the REST bridge with them only where installed.
    for dist in ("grpcio", "protobuf", "httpx", "fastapi", "uvicorn", "uvloop", "httptools",
                 "cffi", "numpy"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "absent"
    return found


def machine_info(threads: int) -> dict[str, Any]:
    """A JSON-ready description of this host and of the code measured."""
    return {
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "threads_used": threads,
        "mem_total_gib": _mem_total_gib(),
        "gpu": _run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                     "--format=csv,noheader"]),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": _versions(),
        "llama_cpp": f"llama-cpp-python {paths.LLAMA_CPP_PYTHON_VERSION} sdist (vendor/llama.cpp)",
        # BENCH_COMMIT: for copies of the tree without .git (the GPU host gets one).
        "commit": os.environ.get("BENCH_COMMIT") or git_commit(),
    }


def git_commit() -> str:
    """HEAD's short hash, with "+changes" when the working tree differs from it."""
    head = _run(["git", "-C", str(paths.REPO_ROOT), "rev-parse", "--short", "HEAD"])
    dirty = _run(["git", "-C", str(paths.REPO_ROOT), "status", "--porcelain",
                  "--untracked-files=no"])
    return f"{head}+changes" if head and dirty else head
