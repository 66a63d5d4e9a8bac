"""Run buf's lint and breaking-change checks on protos/llama/v1, offline.

buf cannot resolve google/api/*.proto without the network, so each check hands it an image:
the descriptor set (imports and comments included) that protoc builds from the current protos
with protos/generate.py's include path, where googleapis-common-protos supplies google/api.
The configuration is protos/buf.yaml; buf itself comes from npm (@bufbuild/buf in
tests/node/package.json, installed by `scripts/setup.sh --test`), or LLAMA_GRPC_BUF, or PATH.

    python protos/buf_check.py lint                  # STANDARD + COMMENTS
    python protos/buf_check.py breaking              # WIRE_JSON against the release snapshot
    python protos/buf_check.py snapshot --rev REV    # write protos/release/llama_v1.binpb
    python protos/buf_check.py generate --out DIR    # client stubs (protos/buf.gen*.yaml)

Each prints buf's output and exits with buf's status (1 when buf is missing).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path
from types import ModuleType

PROTOS = Path(__file__).resolve().parent
REPO_ROOT = PROTOS.parent
CONFIG = PROTOS / "buf.yaml"
RELEASE_IMAGE = PROTOS / "release" / "llama_v1.binpb"
# The files buf checks inside an image; the rest (google/...) are imports.
API_PATH = "llama/v1"
NPM_BUF = REPO_ROOT / "tests" / "node" / "node_modules" / ".bin" / "buf"


class BufMissing(RuntimeError):
    """No buf binary was found."""


def _generate_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("llama_proto_generate", PROTOS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


def buf_binary() -> Path:
    """LLAMA_GRPC_BUF, else the npm package's buf, else buf on PATH."""
    candidates = [os.environ.get("LLAMA_GRPC_BUF"), str(NPM_BUF), shutil.which("buf")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise BufMissing("buf not found: run `scripts/setup.sh --test` (installs @bufbuild/buf "
                     "into tests/node) or set LLAMA_GRPC_BUF")


def build_descriptor_set(proto_root: Path, out: Path) -> None:
    """protoc's descriptor set of proto_root/llama/v1 with imports and comments."""
    gen = _generate_module()
    includes = [proto_root, *gen.include_dirs()[1:]]
    sources = sorted((proto_root / API_PATH).glob("*.proto"))
    args = [sys.executable, "-m", "grpc_tools.protoc", *[f"--proto_path={p}" for p in includes],
            f"--descriptor_set_out={out}", "--include_imports", "--include_source_info",
            *map(str, sources)]
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"protoc exited {result.returncode}:\n{result.stderr}")


def run_buf(*args: str) -> subprocess.CompletedProcess[str]:
    """buf with args, from the repository root; its output captured."""
    return subprocess.run([str(buf_binary()), *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300, check=False)


def _image_ref(path: Path) -> str:
    # protoc writes a FileDescriptorSet, which is a valid binary buf image; the suffix .pb is
    # not one buf recognises, hence the explicit format.
    return f"{path}#format=binpb"


def lint() -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="llama-buf-") as tmp:
        image = Path(tmp) / "current.pb"
        build_descriptor_set(PROTOS, image)
        return run_buf("lint", _image_ref(image), "--config", str(CONFIG), "--path", API_PATH)


def breaking(against: Path = RELEASE_IMAGE) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="llama-buf-") as tmp:
        image = Path(tmp) / "current.pb"
        build_descriptor_set(PROTOS, image)
        return breaking_image(image, against)


def breaking_image(image: Path, against: Path = RELEASE_IMAGE,
                   error_format: str = "text") -> subprocess.CompletedProcess[str]:
    """buf breaking of a descriptor set (protoc's) against a release image; error_format
    "json" writes one object a line, naming the rule (`type`)."""
    return run_buf("breaking", _image_ref(image), "--against", _image_ref(against),
                   "--config", str(CONFIG), "--path", API_PATH, "--error-format", error_format)


def generate(template: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """buf generate of llama/v1 (plus what the template includes) with a buf.gen.yaml; plugins
    are looked up on PATH after tests/node's npm binaries."""
    with tempfile.TemporaryDirectory(prefix="llama-buf-") as tmp:
        image = Path(tmp) / "current.pb"
        build_descriptor_set(PROTOS, image)
        env = {**os.environ, "PATH": f"{NPM_BUF.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        return subprocess.run([str(buf_binary()), "generate", _image_ref(image), "--template",
                               str(template.resolve()), "--path", API_PATH, "-o",
                               str(out.resolve())], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=300, check=False, env=env)


def snapshot(rev: str, out: Path = RELEASE_IMAGE) -> subprocess.CompletedProcess[str]:
    """Write the buf image of protos/ as committed at git revision rev (no comments)."""
    archive = subprocess.run(["git", "archive", "--format=tar", rev, "protos/llama"],
                             cwd=REPO_ROOT, capture_output=True, check=True).stdout
    with tempfile.TemporaryDirectory(prefix="llama-buf-") as tmp:
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        descriptors = Path(tmp) / "release.pb"
        build_descriptor_set(Path(tmp) / "protos", descriptors)
        out.parent.mkdir(parents=True, exist_ok=True)
        return run_buf("build", _image_ref(descriptors), "--exclude-source-info", "-o", str(out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("lint", help="buf lint (protos/buf.yaml: STANDARD + COMMENTS)")
    check = sub.add_parser("breaking", help="buf breaking (WIRE_JSON) against a release image")
    check.add_argument("--against", type=Path, default=RELEASE_IMAGE)
    snap = sub.add_parser("snapshot", help="write the release image of a git revision")
    snap.add_argument("--rev", required=True, help="git revision of the release")
    snap.add_argument("--out", type=Path, default=RELEASE_IMAGE)
    stubs = sub.add_parser("generate", help="client stubs with a buf.gen.yaml template")
    stubs.add_argument("--template", type=Path, default=PROTOS / "buf.gen.yaml")
    stubs.add_argument("--out", type=Path, required=True, help="output folder")
    options = parser.parse_args(argv)
    try:
        if options.command == "lint":
            result = lint()
        elif options.command == "breaking":
            result = breaking(options.against)
        elif options.command == "generate":
            result = generate(options.template, options.out)
        else:
            result = snapshot(options.rev, options.out)
    except BufMissing as error:
        print(error, file=sys.stderr)
        return 1
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
