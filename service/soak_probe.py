"""A sampling hook for the soak (bench/soak.py): with LLAMA_GRPC_SOAK_PROBE=<path> set, a daemon
thread appends one JSON line every LLAMA_GRPC_SOAK_PROBE_S seconds (default 5) with what only
the process itself can count: the Python objects the garbage collector tracks and the live
Python threads. RSS, file descriptors and OS threads the soak reads from /proc. Unset in
deployments (nothing starts)."""

from __future__ import annotations

import gc
import json
import os
import threading
import time
from pathlib import Path

PROBE_ENV = "LLAMA_GRPC_SOAK_PROBE"
PERIOD_ENV = "LLAMA_GRPC_SOAK_PROBE_S"


def sample() -> dict[str, float]:
    return {"time": time.time(), "gc_objects": len(gc.get_objects()),
            "py_threads": threading.active_count()}


def start_from_env() -> threading.Thread | None:
    """Start the probe thread when PROBE_ENV names a file; None otherwise."""
    path = os.environ.get(PROBE_ENV)
    if not path:
        return None
    period = float(os.environ.get(PERIOD_ENV) or 5.0)

    def run() -> None:
        with Path(path).open("a") as out:
            while True:
                out.write(json.dumps(sample()) + "\n")
                out.flush()
                time.sleep(period)

    thread = threading.Thread(target=run, name="soak-probe", daemon=True)
    thread.start()
    return thread
