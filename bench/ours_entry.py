"""Entry point the benchmark starts our service with: `python -m service.cli`, plus two things.

1. libllama is loaded before anything imports numpy. On the GPU image (numpy 2.5.2 wheel with its
   bundled OpenBLAS and libgfortran) a numpy imported first made llama_model_load crash with
   SIGSEGV (in print_info, CPU-only too); with libllama loaded first it does not.
2. BENCH_SWITCH_INTERVAL, when set, is passed to sys.setswitchinterval (seconds): an experiment
   knob for GIL hand-off latency between the engine thread and the event loop. Unset: Python's
   default (5 ms), as in production.
"""

from __future__ import annotations

import os
import sys

import native._ffi  # noqa: F401 - loaded first on purpose, see above
from service.cli import main

if __name__ == "__main__":
    interval = os.environ.get("BENCH_SWITCH_INTERVAL")
    if interval:
        sys.setswitchinterval(float(interval))
    sys.argv[0] = "llama-grpc-server"
    raise SystemExit(main())
