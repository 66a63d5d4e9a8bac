#!/usr/bin/env bash
# `bash bench/gpu_run.sh recheck`'s background part: the GPU figures that issues 19, 20 and 24
# wait for, in one run on the bench model (~8 minutes after the CUDA build):
#   1. what scraping /metrics and /slots costs (bench/scrape_overhead.py, 512 tokens a stream,
#      6 pairs: the steady-state lines are the ones to read);
#   2. 8 and 64 streams through gRPC, the REST bridge and Envoy beside llama-server, with the
#      step timeline (issue 24's Envoy / bridge ratio, issue 26's host against decode per step);
#   3. the speculative rows (bench/speculative.py: draft = target, the disagreeing tiny-bpe
#      draft, the cheap agreeing spm-deep pair, n-gram).
# Usage (from gpu_run.sh, in the repository root): bash bench/gpu_recheck.sh RESULTS_DIR
# RECHECK_PARTS (default scrape,streams,speculative) picks parts, e.g. streams,speculative when
# the device time left is short (issue 19 is resolved; its part takes ~2 minutes).
set -uo pipefail
results="$1"
parts=",${RECHECK_PARTS:-scrape,streams,speculative},"
mkdir -p "$results"
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"
python3 -m bench --cuda --prepare-only --models bench || exit 1
if [[ $parts == *,scrape,* ]]; then
    # bench.scrape_overhead starts our server itself: point it at the CUDA libllama just built.
    eval "$(python3 -c "from bench.llama_build import ensure_server_build
b = ensure_server_build(cuda=True)
print(f'export LLAMA_GRPC_LIB_DIR={b.libllama_dir} LLAMA_GRPC_INCLUDE_DIR={b.root}/include')")"
    python3 -m bench.scrape_overhead --server-args '-ngl 999' --tokens 512 --reps 6 \
        | tee "$results/scrape-overhead.md"
    unset LLAMA_GRPC_LIB_DIR LLAMA_GRPC_INCLUDE_DIR
fi
if [[ $parts == *,streams,* ]]; then
    python3 -m bench --cuda --out "$results/streams" --models bench --reps 2 --concurrency 8 \
        --wide-concurrency 64 --no-batched-bench --no-embeddings --step-timeline \
        --scenarios aggregate_8,aggregate_64
fi
if [[ $parts == *,speculative,* ]]; then
    python3 -m bench --cuda --out "$results/speculative" --speculative-only --reps 2 \
        --spec-target bench --spec-draft tiny-bpe
fi
