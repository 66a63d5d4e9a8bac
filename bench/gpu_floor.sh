#!/usr/bin/env bash
# The engine's own time to first token on the GPU host (python -m bench.ttft_floor), after
# `bash bench/gpu_run.sh start` has built everything there (same machine, a later command):
# the bench model, all layers offloaded, on the CUDA libllama the benchmark built the cffi
# extension against (its rpath).
#
#   bash bench/gpu_floor.sh [ttft_floor args]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"
python3 -m bench.ttft_floor --gpu-layers 999 --threads 4 "$@"
