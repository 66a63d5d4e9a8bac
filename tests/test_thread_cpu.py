"""bench.thread_cpu's pure parts: reading a thread's CPU time, naming threads from a py-spy
dump, grouping the deltas, and the table (the measurement itself runs two servers: by hand)."""

from __future__ import annotations

import os
import threading

from bench.thread_cpu import Sampler, ThreadKey, _task_times, parse_dump, render

DUMP = '''Process 23366: python -m bench.thread_cpu
Python v3.11.7 (/usr/bin/python3.11)

Thread 23366 (idle): "MainThread"
    select (selectors.py:468)
Thread 14657 (active): "engine"
    run (threading.py:982)
'''


def test_thread_names_come_from_the_dump() -> None:
    assert parse_dump(DUMP) == {23366: "MainThread", 14657: "engine"}
    assert parse_dump("") == {}


def test_task_times_list_every_thread_of_a_process() -> None:
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)
    worker.start()
    try:
        times = _task_times(os.getpid())
        assert os.getpid() in times and worker.native_id in times
        assert all(cpu >= 0 for _, cpu in times.values())
    finally:
        stop.set()
        worker.join()


def test_deltas_are_grouped_by_process_and_name() -> None:
    before = {("server", 1): ("MainThread", 1.0), ("server", 2): ("python", 0.5),
              ("llama-server", 9): ("llama-server", 2.0)}
    after = {("server", 1): ("MainThread", 1.5), ("server", 2): ("python", 0.5),
             ("server", 3): ("python", 0.25), ("llama-server", 9): ("llama-server", 3.0)}
    delta = Sampler.delta(before, after)
    assert delta[ThreadKey("server", "MainThread")] == 0.5
    assert delta[ThreadKey("server", "python")] == 0.25  # a thread born in between counts whole
    assert delta[ThreadKey("llama-server", "llama-server[9]")] == 1.0


def test_the_table_shows_each_path_its_own_server_threads() -> None:
    totals = {"grpc": {ThreadKey("server", "engine"): 0.64, ThreadKey("llama-server", "x"): 0.1},
              "llama-server": {ThreadKey("llama-server", "llama-server[9]"): 0.32,
                               ThreadKey("server", "engine"): 0.01}}
    text = render(totals, {"grpc": 64, "llama-server": 32}, {"grpc": [10.0],
                                                            "llama-server": [12.0]}, 2)
    grpc, theirs = text.split("\n\nllama-server:")
    assert "| server | engine | 10.000 |" in grpc and "| llama-server |" not in grpc
    assert "| llama-server | llama-server[9] | 10.000 |" in theirs and "engine" not in theirs
