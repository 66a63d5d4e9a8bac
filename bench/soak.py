"""The soak (issue 22, item 5): mixed requests with drops against one server for --minutes,
sampling the server process's RSS, open file descriptors and OS threads (from /proc), its
gc-tracked Python objects and Python threads (service/soak_probe.py, switched on by an
environment variable), and the REST bridge child's RSS, fds and threads. Writes soak.csv,
soak.png (matplotlib) and soak.json (first/last values after warm-up, growth) to --out.

    python -m bench.soak --minutes 30 --out /tmp/soak

Not in CI. Requests, from --workers threads: gRPC streams read to the end or cancelled after
their first text, bridge SSE streams dropped or read, non-streamed chat over the bridge,
tokenize, and a refused bad input; prompts vary so the cache turns over.

With --warm-piece-cache the server is started through bench/soak_server.py, which fills its
token-piece caches (every id, both `special` flags) before it answers, so that the growth
figures leave out those caches (bounded by the vocabulary; a tiny random model fills them
slowly, over the whole soak)."""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
from google.protobuf import json_format
from llama.v1 import completion_pb2, service_pb2_grpc, tokenize_pb2

from bench.servers import free_port
from native.testmodels import ensure_model
from service.soak_probe import PERIOD_ENV, PROBE_ENV

REPO = Path(__file__).resolve().parent.parent
WARM_UP_FRACTION = 0.2  # growth is measured from here: the first minutes fill caches and pools


def proc_stats(pid: int) -> dict[str, float]:
    """RSS (MiB), open fds and OS threads of a process, from /proc."""
    rss = threads = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    fds = len(list(Path(f"/proc/{pid}/fd").iterdir()))
    return {"rss_mib": rss, "fds": fds, "threads": threads}


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "children").read_text().split()
        except FileNotFoundError:  # the thread ended while we looked
            continue
        out += [int(c) for c in text]
    return out


class Load:
    """The mixed requests; counts what each kind got."""

    def __init__(self, grpc_target: str, base_url: str) -> None:
        self.channel = grpc.insecure_channel(grpc_target)
        self.stub = service_pb2_grpc.LlamaServerStub(self.channel)
        self.base_url = base_url
        self.counts: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self._lock = threading.Lock()

    def _count(self, table: dict[str, int], key: str) -> None:
        with self._lock:
            table[key] = table.get(key, 0) + 1

    def kinds(self) -> list[Callable[[random.Random, httpx.Client], None]]:
        return [self.grpc_full, self.grpc_drop, self.http_drop, self.http_stream,
                self.http_chat, self.tokenize, self.bad_input]

    def grpc_full(self, rnd: random.Random, _c: httpx.Client) -> None:
        req = json_format.ParseDict({"prompt": prompt(rnd), "n_predict": rnd.randint(1, 32),
                                     "stream": True}, completion_pb2.CompletionRequest())
        list(self.stub.Completion(req, timeout=120))

    def grpc_drop(self, rnd: random.Random, _c: httpx.Client) -> None:
        req = json_format.ParseDict({"prompt": prompt(rnd), "n_predict": 512,
                                     "ignore_eos": True, "stream": True},
                                    completion_pb2.CompletionRequest())
        call = self.stub.Completion(req, timeout=120)
        try:
            for msg in call:
                if msg.content:
                    break
        finally:
            call.cancel()

    def http_drop(self, rnd: random.Random, client: httpx.Client) -> None:
        with client.stream("POST", "/completion", json={
                "prompt": prompt(rnd), "n_predict": 512, "ignore_eos": True,
                "stream": True}) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    break

    def http_stream(self, rnd: random.Random, client: httpx.Client) -> None:
        r = client.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": prompt(rnd)}],
            "max_tokens": rnd.randint(1, 16), "stream": True})
        r.raise_for_status()

    def http_chat(self, rnd: random.Random, client: httpx.Client) -> None:
        r = client.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": prompt(rnd)}], "max_tokens": 8})
        r.raise_for_status()

    def tokenize(self, rnd: random.Random, _c: httpx.Client) -> None:
        self.stub.Tokenize(tokenize_pb2.TokenizeRequest(content=prompt(rnd) * 20), timeout=60)

    def bad_input(self, rnd: random.Random, client: httpx.Client) -> None:
        r = client.post("/completion", json={"prompt": "x", "n_probs": -rnd.randint(1, 9)})
        if r.status_code != 400:
            raise RuntimeError(f"bad input answered {r.status_code}")

    def worker(self, seed: int, until: float) -> None:
        rnd = random.Random(seed)
        kinds = self.kinds()
        with httpx.Client(base_url=self.base_url, timeout=120.0) as client:
            while time.monotonic() < until:
                kind = rnd.choice(kinds)
                try:
                    kind(rnd, client)
                    self._count(self.counts, kind.__name__)
                except Exception as e:  # counted and reported; the soak goes on
                    self._count(self.errors, f"{kind.__name__}: {type(e).__name__}")


def prompt(rnd: random.Random) -> str:
    words = ["alpha", "beta", "gamma", "delta", "river", "stone", "cloud", "lamp", "seven"]
    return " ".join(rnd.choice(words) for _ in range(rnd.randint(3, 60)))


def start_server(model: Path, out: Path, probe_s: float,
                 warm_pieces: bool = False) -> tuple[subprocess.Popen[Any], str, str]:
    grpc_port, http_port = free_port(), free_port()
    module = "bench.soak_server" if warm_pieces else "service.cli"
    env = {**_env(), PROBE_ENV: str(out / "probe.jsonl"), PERIOD_ENV: str(probe_s)}
    log = (out / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "-m", str(model), "-c", "8192", "-np", "4",
         "--grpc-port", str(grpc_port), "--port", str(http_port)],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}; see {out / 'server.log'}")
        try:
            if httpx.get(base + "/health", timeout=2).status_code == 200:
                return proc, f"127.0.0.1:{grpc_port}", base
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise TimeoutError("server not ready")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLAMA_ARG_")}
    env["PYTHONPATH"] = f"{REPO}:{REPO / 'gen' / 'python'}"
    return env


def sample(pid: int, out: Path, t0: float) -> dict[str, float]:
    row = {"t_s": round(time.monotonic() - t0, 1), **proc_stats(pid)}
    bridge = children(pid)
    if bridge:
        row.update({f"bridge_{k}": v for k, v in proc_stats(bridge[0]).items()})
    probe = out / "probe.jsonl"
    if probe.exists():
        lines = probe.read_text().splitlines()
        if lines:
            last = json.loads(lines[-1])
            row.update(gc_objects=last["gc_objects"], py_threads=last["py_threads"])
    return row


def summarize(rows: list[dict[str, float]]) -> dict[str, Any]:
    start = rows[int(len(rows) * WARM_UP_FRACTION)]
    end = rows[-1]
    keys = [k for k in end if k != "t_s"]
    return {k: {"after_warm_up": start.get(k), "end": end[k],
                "growth": round(end[k] - start.get(k, end[k]), 2)} for k in keys}


def plot(rows: list[dict[str, float]], png: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    series = [("rss_mib", "server RSS (MiB)"), ("gc_objects", "server gc objects"),
              ("fds", "server open fds"), ("threads", "server OS threads"),
              ("bridge_rss_mib", "bridge RSS (MiB)"), ("bridge_fds", "bridge open fds")]
    fig, axes = plt.subplots(3, 2, figsize=(10, 8), dpi=110, sharex=True)
    for ax, (key, label) in zip(axes.flat, series, strict=True):
        points = [(r["t_s"] / 60, r[key]) for r in rows if key in r]
        ax.plot([p[0] for p in points], [p[1] for p in points])
        ax.set_title(label, fontsize=9)
        ax.set_ylim(bottom=0)
    for ax in axes[-1]:
        ax.set_xlabel("minutes")
    fig.suptitle("soak: mixed requests with drops", fontsize=10)
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--sample-s", type=float, default=5.0)
    p.add_argument("--out", type=Path, default=Path("/tmp/llama-grpc-soak"))
    p.add_argument("--warm-piece-cache", action="store_true",
                   help="fill the server's token-piece caches (every id, both flags) at start")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("probe.jsonl", "rows.jsonl"):
        (args.out / name).unlink(missing_ok=True)
    proc, target, base = start_server(ensure_model("tiny-bpe"), args.out, args.sample_s,
                                      args.warm_piece_cache)
    load = Load(target, base)
    t0 = time.monotonic()
    until = t0 + args.minutes * 60
    workers = [threading.Thread(target=load.worker, args=(i, until), daemon=True)
               for i in range(args.workers)]
    for w in workers:
        w.start()
    rows: list[dict[str, float]] = []
    try:
        while time.monotonic() < until:
            time.sleep(args.sample_s)
            rows.append(sample(proc.pid, args.out, t0))
            with (args.out / "rows.jsonl").open("a") as f:  # kept if the soak dies
                f.write(json.dumps(rows[-1]) + "\n")
        for w in workers:
            w.join(150)
        time.sleep(args.sample_s + 1)  # a last sample with the server idle
        rows.append(sample(proc.pid, args.out, t0))
    finally:
        load.channel.close()
        proc.terminate()
        proc.wait(30)
    with (args.out / "soak.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=sorted({k for r in rows for k in r}))
        writer.writeheader()
        writer.writerows(rows)
    summary = {"minutes": args.minutes, "workers": args.workers,
               "warm_piece_cache": args.warm_piece_cache, "requests": load.counts,
               "errors": load.errors, "server_exit": proc.returncode,
               "resources": summarize(rows), "png": plot(rows, args.out / "soak.png")}
    (args.out / "soak.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0 if not load.errors and proc.returncode == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
