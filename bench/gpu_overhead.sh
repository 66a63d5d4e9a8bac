#!/usr/bin/env bash
# The REST bridge's overhead against direct gRPC (python -m rest_bridge.overhead) on the GPU host,
# after `bash bench/gpu_run.sh start` has built everything there (same machine, a later command):
# our server on the bench model, all layers offloaded, then the raw-HTTP and the httpx client.
#
#   bash bench/gpu_overhead.sh [runs]        # default 30 runs of each path per client
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"
RUNS="${1:-30}"
MODEL="$(ls "$LLAMA_GRPC_CACHE"/models/bench-*.gguf | head -n 1)"
LOG="${OUT:-/tmp}/overhead-server.log"
python3 -m service.cli -m "$MODEL" -c 16384 -np 8 -t 4 -tb 4 -ngl 999 \
    --host 127.0.0.1 --port 18080 --grpc-port 15051 >"$LOG" 2>&1 &
SERVER=$!
trap 'kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true' EXIT
for _ in $(seq 120); do
    if python3 -c 'import urllib.request as u; u.urlopen("http://127.0.0.1:18080/health", timeout=1)' \
        2>/dev/null; then break; fi
    sleep 1
done
for client in raw httpx; do
    echo "== client: $client"
    python3 -m rest_bridge.overhead --grpc-target 127.0.0.1:15051 \
        --rest-url http://127.0.0.1:18080 --runs "$RUNS" --client "$client"
done
