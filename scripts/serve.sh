#!/usr/bin/env bash
# Set up whatever is missing, then run the server (gRPC on :50051, REST on 127.0.0.1:8080).
# With no -m/--model, it serves the generated default model: RANDOM WEIGHTS, real Llama-3
# vocabulary and chat template; it proves the plumbing, its text is gibberish. Pass a real GGUF
# with `-m path/to/model.gguf`; every other llama-server flag works too.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
has_model=0
for a in "$@"; do case "$a" in -m|--model|--model=*) has_model=1 ;; esac; done
if [ "$has_model" = 0 ] && [ -z "${LLAMA_ARG_MODEL:-}" ]; then
    default_model=$(python -m native.testmodels tiny-bpe | cut -f2)
    echo "[serve] no -m given: serving the generated test model $default_model (random weights)" >&2
    set -- -m "$default_model" "$@"
fi
exec llama-grpc-server "$@"
