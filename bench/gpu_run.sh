#!/usr/bin/env bash
# `python -m bench --cuda` on a GPU host that has no network (the device tool's machines).
#
# Needs what `python -m bench.device_pack` made here, carried along: .device/ (the trimmed
# llama.cpp source), .whl/ (wheels for the host's python3) and gen/ (the generated llama.v1 code).
#
#   bash bench/gpu_run.sh start [bench args]   # set up, then run the whole benchmark in the
#                                              # background (it outlives this command), and wait
#   bash bench/gpu_run.sh wait                 # wait for it again (a later command, same machine)
#   bash bench/gpu_run.sh plan [more args]     # `start` with issue 26's plan (PLAN_ARGS below):
#                                              # generates the 1b and 8b models here (timed, in
#                                              # run.log and results.md), then every model
#   bash bench/gpu_run.sh recheck              # issues 19, 20 and 24's GPU figures on the bench
#                                              # model (bench/gpu_recheck.sh), then as `start`
#
# Either one waits up to WAIT_S seconds (default 540), then copies what is ready to $OUT: the
# results (results.md, results.json, aggregate.png), profiles and logs (logs.tar.gz).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/gpu_env.sh"
RUN_DIR="$PWD/build/gpu-run"
if [ -z "${BENCH_COMMIT:-}" ] && [ -f .device/commit ]; then
    BENCH_COMMIT="$(cat .device/commit)"  # written by bench.device_pack: this copy's .git may be stale
    export BENCH_COMMIT
fi

setup() {
    mkdir -p "$LLAMA_GRPC_CACHE" "$RUN_DIR"
    if [ ! -f "$SITE/.done" ]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$SITE" .whl/*.whl
        touch "$SITE/.done"
    fi
    # bench.device_pack --envoy: the fourth path's binary, found on PATH ($SITE/bin).
    if [ -f .device/envoy.xz ] && [ ! -x "$SITE/bin/envoy" ]; then
        mkdir -p "$SITE/bin"
        xz -dc .device/envoy.xz > "$SITE/bin/envoy"
        chmod +x "$SITE/bin/envoy"
    fi
    # The archive's one top folder is the source folder native.paths expects (its version).
    local src
    src="$(python3 -c 'import tarfile; t = tarfile.open(".device/llama-src.tar.xz")
print(t.next().name.split("/")[0])')"
    if [ ! -f "$LLAMA_GRPC_CACHE/$src/include/llama.h" ]; then
        tar xJf .device/llama-src.tar.xz -C "$LLAMA_GRPC_CACHE"
    fi
    python3 - <<'EOF'
import sys, sysconfig, pathlib
inc = pathlib.Path(sysconfig.get_paths()["include"]) / "Python.h"
print(f"python {sys.version.split()[0]}; Python.h {'found' if inc.exists() else 'MISSING'} ({inc})")
sys.exit(0 if inc.exists() else 3)  # the cffi extension cannot be compiled without it
EOF
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    nproc
}

# Issue 26: three models (bench, Llama-3.2-1B's and Llama-3.1-8B's shapes in Q4_K_M), ours
# against llama-server with default flags and with --backend-sampling and llama-batched-bench,
# at 1 and 8 streams (--parallel 8) and 64, 128, 256 streams at matching --parallel (256 tokens
# a slot: three 8B servers' caches fit one 80 GB card), with the step timeline (item 4: host
# against decode per step, from our server's LLAMA_GRPC_STEP_TIMELINE summaries).
# docs/benchmarks.md has the estimate.
PLAN_ARGS=(--models bench,1b,8b --reps 3 --concurrency 1,8 --wide-concurrency 64,128,256
           --wide-parallel 0 --wide-ctx-per-slot 256 --no-envoy --no-embeddings --step-timeline
           --scenarios single,aggregate_1,aggregate_8,ttft_idle,aggregate_64,aggregate_128,aggregate_256)

collect() {
    local out="${OUT:-$RUN_DIR/out}"
    mkdir -p "$out"
    # The tables, JSON and plots, each model's in its folder when several were measured.
    if [ -d "$RUN_DIR/results" ]; then
        (cd "$RUN_DIR/results" && find . \( -name 'results.md' -o -name 'results.json' \
            -o -name '*.png' -o -name 'models.json' \) -print0 | tar cf - --null -T -) \
            | tar xf - -C "$out"
    fi
    cp "$RUN_DIR/run.log" "$out/run.log" 2>/dev/null || true
    (cd "$RUN_DIR" && tar czf "$out/logs.tar.gz" --exclude='*.json' --exclude='*.png' \
        results/ 2>/dev/null) || true
    if [ -f "$RUN_DIR/results/results.md" ]; then cat "$RUN_DIR/results/results.md"; fi
    tail -n 25 "$RUN_DIR/run.log" || true
}

wait_done() {
    local limit="${WAIT_S:-540}" waited=0
    while [ ! -f "$RUN_DIR/exit_code" ] && [ "$waited" -lt "$limit" ]; do
        sleep 5
        waited=$((waited + 5))
    done
    if [ -f "$RUN_DIR/exit_code" ]; then
        echo "benchmark finished with exit code $(cat "$RUN_DIR/exit_code")"
    else
        echo "benchmark still running after ${waited}s; run 'bash bench/gpu_run.sh wait' next"
    fi
    collect
}

if [ "${1:-}" = plan ]; then
    shift
    set -- start "${PLAN_ARGS[@]}" "$@"
fi

case "${1:-}" in
    start)
        shift
        setup
        rm -f "$RUN_DIR/exit_code"
        # setsid: the run survives the end of this command (the machine stays ours meanwhile).
        setsid bash -c "python3 -m bench --cuda --out '$RUN_DIR/results' $* \
            > '$RUN_DIR/run.log' 2>&1; echo \$? > '$RUN_DIR/exit_code'" \
            < /dev/null > /dev/null 2>&1 &
        wait_done
        ;;
    recheck)
        setup
        rm -f "$RUN_DIR/exit_code"
        setsid bash -c "bash bench/gpu_recheck.sh '$RUN_DIR/results' > '$RUN_DIR/run.log' 2>&1; \
            echo \$? > '$RUN_DIR/exit_code'" < /dev/null > /dev/null 2>&1 &
        wait_done
        ;;
    wait)
        wait_done
        ;;
    *)
        echo "usage: bash bench/gpu_run.sh start [bench args] | plan [bench args] | recheck | wait" >&2
        exit 2
        ;;
esac
