"""One OpenMP team in a server process: the engine thread's (native/passing_thread.py says why).

libgomp keeps a team of worker threads for each thread that ever ran a parallel region, while
that thread lives; with more of them than CPUs it stops spinning at barriers and every `-t N`
decode on N cores pays hundreds of context switches a token. So a warm-up on the loader thread
or a media encode on a request-preparation worker, both long-lived pooled threads, must leave no
team behind. Counted in a fresh process: threads that Python did not start are libgomp's
workers (libllama and libmtmd start no other thread that outlives a call; numpy's OpenBLAS
would, so it is held to one thread, which it runs inline).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from native.passing_thread import run_on_passing_thread
from native.testmodels import ensure_model

_PROBE = r"""
import json, os, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from service.config import load_config
from service.runtime import load_runtime

def foreign_threads():
    ours = {t.native_id for t in threading.enumerate()}
    return len([t for t in os.listdir("/proc/self/task") if int(t) not in ours])

model, mmproj = sys.argv[1], sys.argv[2]
pool = ThreadPoolExecutor(1)  # stays alive, as the server's loader and preparation workers do
config = load_config(["-m", model, "-c", "512", "-np", "1", "-t", "2", "-tb", "2"], {})
rt = pool.submit(load_runtime, config).result()
rt.engine.call(rt.ctx.warmup).result()  # a decode on the engine thread, as a first request's
counts = {"after_load": foreign_threads()}

def encode():
    from native.mtmd import Projector, ProjectorParams
    from native.testmodels.test_images import make_png
    proj = Projector(rt.model, mmproj, ProjectorParams(use_gpu=False, n_threads=2))
    chunks = proj.tokenize("Describe " + proj.marker, [proj.bitmap(make_png(40, 24, pattern=1))])
    return [proj.encode(c).shape for c in chunks if type(c).__name__ == "MediaChunk"]

counts["encoded"] = len(pool.submit(encode).result())
for _ in range(200):  # a finished thread's team exits on its own, soon after (not joined)
    if foreign_threads() <= counts["after_load"]:
        break
    time.sleep(0.05)
counts["after_encode"] = foreign_threads()
rt.engine.stop()
print(json.dumps(counts))
"""


def test_warm_up_and_media_encodes_leave_only_the_engine_threads_team(
        tiny_bpe_path: Path) -> None:
    mmproj = ensure_model("tiny-vl-mmproj")
    out = subprocess.run([sys.executable, "-c", _PROBE, str(tiny_bpe_path), str(mmproj)],
                         capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[1],
                         env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    counts = json.loads(out.stdout.strip().splitlines()[-1])
    assert counts["encoded"] == 1
    # -t 2: the engine thread's team is it and one worker; a warm-up or an encode on the
    # pooled thread would have left a second worker there.
    assert counts["after_load"] == 1, counts
    assert counts["after_encode"] == 1, counts


def test_run_on_passing_thread_returns_on_another_thread_that_ends() -> None:
    seen: list[threading.Thread] = []

    def work() -> int:
        seen.append(threading.current_thread())
        return 42

    assert run_on_passing_thread(work) == 42
    assert seen[0] is not threading.current_thread()
    assert not seen[0].is_alive()


def test_run_on_passing_thread_raises_the_callables_exception() -> None:
    def fail() -> None:
        raise ValueError("from the passing thread")

    with pytest.raises(ValueError, match="from the passing thread"):
        run_on_passing_thread(fail)
