# Sourced by the bench/gpu_*.sh scripts: where the GPU host keeps the caches and the wheels that
# `bash bench/gpu_run.sh start` installed, and the import path for our packages.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONUNBUFFERED=1
export LLAMA_GRPC_CACHE="${LLAMA_GRPC_CACHE:-$PWD/build/llama-grpc-cache}"
SITE=/tmp/llama-grpc-site
export PYTHONPATH="$SITE:$PWD:$PWD/gen/python"
export PATH="$SITE/bin:$PATH"
