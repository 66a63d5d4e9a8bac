"""Per-thread CPU time of each server during single-stream generation (issue 26, item 3).

    python -m bench.thread_cpu --threads 2 --runs 6

At llama-server's default thread count (all cores) do our extra threads (the engine thread,
the sampling workers, grpc's threads, the event loop, the REST bridge process) take CPU that
ggml's threads need? Wall-clock rates on a shared machine swing too much to tell; CPU time per
thread does not. Both servers run with the same flags (`-np 1`); each run sends one streamed
request (32 prompt tokens, `--tokens` generated) to one path, the paths interleaved, and every
thread's utime + stime (/proc/PID/task/TID/stat) of the server's processes is read before and
after. Threads are grouped by process and name; our Python threads are named from a py-spy
dump taken once the servers are warm (OS names are all "python" otherwise).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from native import paths

_GEN = str(paths.REPO_ROOT / "gen" / "python")
if _GEN not in sys.path:
    sys.path.insert(0, _GEN)

from bench.clients import GenRequest, GrpcClient, HttpClient, StreamResult  # noqa: E402
from bench.scenarios import PromptMaker  # noqa: E402
from bench.servers import (  # noqa: E402
    ServerProcess,
    ServerSettings,
    _children,
    start_llama_server,
    start_our_service,
)

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ThreadKey:
    process: str  # "server", "bridge", "llama-server"
    name: str


def _task_times(pid: int) -> dict[int, tuple[str, float]]:
    """tid -> (comm, CPU seconds) for every thread of `pid`."""
    found = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1: stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        found[int(tid)] = (comm, (int(fields[11]) + int(fields[12])) * TICK_S)
    return found


def python_thread_names(pid: int) -> dict[int, str]:
    """tid -> Python thread name, from `py-spy dump` (empty when py-spy is not there)."""
    try:
        text = subprocess.run(["py-spy", "dump", "--pid", str(pid)], capture_output=True,
                              text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return parse_dump(text)


def parse_dump(text: str) -> dict[int, str]:
    """tid -> thread name from py-spy dump's `Thread 123 (idle): "MainThread"` lines."""
    return {int(m.group(1)): m.group(2)
            for m in re.finditer(r'^Thread (\d+) \(\w+\): "([^"]*)"', text, re.M)}


class Sampler:
    """The CPU seconds of every thread of a set of processes between two readings."""

    def __init__(self, processes: dict[str, int], names: dict[int, str]) -> None:
        self.processes, self.names = processes, names

    def read(self) -> dict[tuple[str, int], tuple[str, float]]:
        out = {}
        for label, pid in self.processes.items():
            for tid, (comm, cpu) in _task_times(pid).items():
                out[(label, tid)] = (self.names.get(tid, comm), cpu)
        return out

    @staticmethod
    def delta(before: dict[tuple[str, int], tuple[str, float]],
              after: dict[tuple[str, int], tuple[str, float]]) -> dict[ThreadKey, float]:
        grouped: dict[ThreadKey, float] = defaultdict(float)
        for (label, tid), (name, cpu) in after.items():
            prev = before.get((label, tid), (name, 0.0))[1]
            # Thread pools name each worker alike; the busiest ggml worker is told apart by tid.
            grouped[ThreadKey(label, name if name != label else f"{name}[{tid}]")] += cpu - prev
        return dict(grouped)


async def _one(client: GrpcClient | HttpClient, req: GenRequest) -> StreamResult:
    return await client.complete(req)


def _pids(server: ServerProcess) -> list[int]:
    return [server.proc.pid, *_children(server.proc.pid)]


def measure(model: Path, threads: int, runs: int, tokens: int, binary: Path,
            log_dir: Path) -> str:
    settings = ServerSettings(model=model, ctx=2048, parallel=1, threads=threads)
    ours = start_our_service(settings, log_dir, bridge=True)
    theirs, url = start_llama_server(binary, settings, log_dir)
    try:
        ours_pids = _pids(ours.server)
        processes = {"llama-server": theirs.proc.pid, "server": ours_pids[0]}
        if len(ours_pids) > 1:
            processes["bridge"] = ours_pids[1]
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)  # grpc.aio binds its channel to the current loop
        clients: dict[str, GrpcClient | HttpClient] = {
            "grpc": GrpcClient(ours.grpc_address), "rest": HttpClient(ours.rest_url),
            "llama-server": HttpClient(url)}
        pm = PromptMaker(seed=26)
        for client in clients.values():  # warm-up: allocations, the first graph
            loop.run_until_complete(_one(client, GenRequest(pm.unique(32), 16)))
        names = {**python_thread_names(processes["server"]),
                 **python_thread_names(processes.get("bridge", 0))}
        sampler = Sampler(processes, names)
        totals: dict[str, dict[ThreadKey, float]] = {p: defaultdict(float) for p in clients}
        generated = dict.fromkeys(clients, 0)
        rates: dict[str, list[float]] = {p: [] for p in clients}
        order = list(clients)
        for run in range(runs):
            for path in order[run % 3:] + order[:run % 3]:
                before = sampler.read()
                res = loop.run_until_complete(_one(clients[path], GenRequest(pm.unique(32),
                                                                            tokens, False)))
                after = sampler.read()
                if res.error:
                    raise RuntimeError(f"{path}: {res.error}")
                for key, cpu in Sampler.delta(before, after).items():
                    totals[path][key] += cpu
                generated[path] += res.n_generated
                rates[path].append(res.decode_rate)
                print(f"[thread_cpu] run {run} {path}: {res.decode_rate:.1f} tok/s",
                      file=sys.stderr, flush=True)
        for client in clients.values():
            loop.run_until_complete(client.close())
        loop.close()
        return render(totals, generated, rates, threads)
    finally:
        ours.server.stop()
        theirs.stop()


def render(totals: dict[str, dict[ThreadKey, float]], generated: dict[str, int],
           rates: dict[str, list[float]], threads: int) -> str:
    """A table per path: CPU ms per generated token for every thread that used any."""
    lines = [f"-t {threads}: CPU ms per generated token, by thread (utime + stime)"]
    for path, by_thread in totals.items():
        n = max(generated[path], 1)
        med = sorted(rates[path])[len(rates[path]) // 2] if rates[path] else 0.0
        lines += ["", f"{path}: {generated[path]} tokens, client decode rate median "
                  f"{med:.1f} tok/s (runs: {', '.join(f'{r:.1f}' for r in rates[path])})",
                  "| process | thread | ms/token |", "| --- | --- | ---: |"]
        for key, cpu in sorted(by_thread.items(), key=lambda kv: -kv[1]):
            own = (path == "llama-server") == (key.process == "llama-server")
            if cpu > 0 and own:
                lines.append(f"| {key.process} | {key.name} | {cpu * 1e3 / n:.3f} |")
        total = sum(c for k, c in by_thread.items()
                    if (path == "llama-server") == (k.process == "llama-server"))
        lines.append(f"| all | | {total * 1e3 / n:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.thread_cpu", description=__doc__)
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--runs", type=int, default=6)
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--model", type=Path, help="GGUF (default: the bench model)")
    p.add_argument("--out", type=Path, default=Path("/tmp/thread-cpu"))
    args = p.parse_args(argv)
    from bench.llama_build import ensure_server_build
    from native.testmodels import ensure_model

    args.out.mkdir(parents=True, exist_ok=True)
    model = args.model or ensure_model("bench")
    print(measure(model, args.threads, args.runs, args.tokens,
                  ensure_server_build().llama_server, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
