"""Generate the Python gRPC modules and the Envoy descriptor set from protos/.

Run from anywhere: ``python protos/generate.py`` writes

- ``gen/python/llama/v1/*_pb2.py``, ``*_pb2.pyi``, ``*_pb2_grpc.py`` (importable
  as ``llama.v1.<file>_pb2`` with ``gen/python`` on ``sys.path``), and
- ``gen/llama_v1.pb``, a descriptor set with imports and source info for
  Envoy's grpc_json_transcoder.

It always generates into a temporary directory first, then copies over only
the files whose bytes changed (and removes stale ones), so a second run
touches nothing. ``--check`` stops after the comparison: it lists the files
that differ and exits with status 1 when ``gen/`` is stale or missing
(2 when protoc itself fails).
Any protoc output on stderr (warnings included) fails the run.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from google.api import annotations_pb2  # googleapis-common-protos ships the .proto too

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "protos"
PROTO_PACKAGE_DIR = Path("llama") / "v1"
GEN_ROOT = REPO_ROOT / "gen"
DESCRIPTOR_NAME = "llama_v1.pb"
# In the descriptor set beside our protos (from googleapis-common-protos).
EXTRA_DESCRIPTORS = ("google/rpc/error_details.proto",)


@dataclass(frozen=True)
class OutputLayout:
    """Where generated files go below one output root (gen/ or a temp dir)."""

    root: Path

    @property
    def python_dir(self) -> Path:
        return self.root / "python"

    @property
    def package_dir(self) -> Path:
        """The top-level generated package; everything below it is ours."""
        return self.python_dir / PROTO_PACKAGE_DIR.parts[0]

    @property
    def descriptor(self) -> Path:
        return self.root / DESCRIPTOR_NAME

    def managed_files(self) -> dict[str, Path]:
        """Generated files present under this root, by path relative to it."""
        found = {DESCRIPTOR_NAME: self.descriptor} if self.descriptor.is_file() else {}
        if self.package_dir.is_dir():
            for path in sorted(self.package_dir.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    found[path.relative_to(self.root).as_posix()] = path
        return found


class GenerationError(RuntimeError):
    """protoc failed or printed diagnostics."""


def proto_sources() -> list[Path]:
    """The .proto files of the API, in a stable order."""
    sources = sorted((PROTO_ROOT / PROTO_PACKAGE_DIR).glob("*.proto"))
    if not sources:
        raise GenerationError(f"no .proto files under {PROTO_ROOT / PROTO_PACKAGE_DIR}")
    return sources


def include_dirs() -> list[Path]:
    """protoc include path: our protos, the well-known types, googleapis."""
    well_known = Path(str(resources.files("grpc_tools") / "_proto"))
    googleapis_root = Path(annotations_pb2.__file__).resolve().parents[2]
    if not (googleapis_root / "google" / "api" / "annotations.proto").is_file():
        raise GenerationError(f"google/api/annotations.proto not found under {googleapis_root}")
    return [PROTO_ROOT, well_known, googleapis_root]


def _protoc(args: list[str]) -> None:
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    diagnostics = (result.stdout + result.stderr).strip()
    if result.returncode != 0 or diagnostics:
        raise GenerationError(f"protoc exited {result.returncode}:\n{diagnostics}")


def run_protoc(layout: OutputLayout) -> None:
    """Generate every output into ``layout``; raise on errors or warnings."""
    layout.python_dir.mkdir(parents=True, exist_ok=True)
    python_out = str(layout.python_dir)
    args = [sys.executable, "-m", "grpc_tools.protoc"]
    args += [f"--proto_path={path}" for path in include_dirs()]
    sources = [str(path) for path in proto_sources()]
    _protoc([*args, f"--python_out={python_out}", f"--pyi_out={python_out}",
             f"--grpc_python_out={python_out}", *sources])
    # The descriptor set also holds the google.rpc error details our statuses carry: Envoy's
    # transcoder (convert_grpc_status) prints them, and answers an empty body for a type it
    # lacks. A run of its own, so that no Python is generated for them (gen/python would then
    # shadow the installed google.rpc package).
    _protoc([*args, f"--descriptor_set_out={layout.descriptor}", "--include_imports",
             "--include_source_info", *sources, *EXTRA_DESCRIPTORS])
    package = layout.python_dir
    for part in PROTO_PACKAGE_DIR.parts:
        package = package / part
        (package / "__init__.py").write_bytes(b"")


def differing_files(fresh: OutputLayout, current: OutputLayout) -> list[str]:
    """Relative paths that are new, changed or stale in ``current``."""
    fresh_files = fresh.managed_files()
    current_files = current.managed_files()
    differing = [
        name
        for name, path in fresh_files.items()
        if name not in current_files or not filecmp.cmp(path, current_files[name], shallow=False)
    ]
    differing += [name for name in current_files if name not in fresh_files]
    return sorted(differing)


def sync(fresh: OutputLayout, current: OutputLayout, names: list[str]) -> None:
    """Make ``current`` equal ``fresh`` for the given relative paths."""
    for name in names:
        source = fresh.root / name
        target = current.root / name
        if source.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        else:
            target.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Generate gen/python and gen/llama_v1.pb from protos/llama/v1."
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="only compare gen/ with a fresh generation; exit 1 if it differs",
    )
    parser.add_argument("--out", type=Path, default=GEN_ROOT, help="output root (default gen/)")
    options = parser.parse_args(argv)
    current = OutputLayout(options.out.resolve())
    with tempfile.TemporaryDirectory(prefix="llama-grpc-gen-") as tmp:
        fresh = OutputLayout(Path(tmp))
        try:
            run_protoc(fresh)
        except GenerationError as error:
            print(error, file=sys.stderr)
            return 2
        names = differing_files(fresh, current)
        if options.check:
            for name in names:
                print(f"stale: {current.root.name}/{name}")
            return 1 if names else 0
        sync(fresh, current, names)
        for name in names:
            action = "wrote" if (fresh.root / name).is_file() else "removed"
            print(f"{action}: {current.root.name}/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
