"""Embedding and rerank scenarios of `python -m bench`: ours (gRPC and the REST bridge) against
llama-server on the real all-MiniLM-L6-v2 (`--embedding`, mean pooling) and on the generated
BERT reranker (`--reranking`), same flags. Every run first checks that both answer the same
(vectors and scores within 1e-4), then measures, interleaved, per path:

- `embd 1x1`: one client, one input a request (embeddings/s);
- `embd 1x64`: one client, 64 inputs a request;
- `embd 32x1`: 32 concurrent clients, one input a request;
- `rerank 64`: one client, 64 documents a request (documents/s).

    python -m bench --embeddings-only      # just these (the generation phases are skipped)
"""

from __future__ import annotations

import json
import math
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
from llama.v1 import embedding_pb2, service_pb2_grpc

from bench.runner import say
from bench.servers import ServerSettings, start_llama_server, start_our_service

TOLERANCE = 1e-4
Call = Callable[[list[str]], int]  # one request of these inputs; returns how many it embedded


@dataclass(frozen=True)
class EmbScenario:
    name: str
    clients: int
    inputs: int  # per request
    requests: int  # per client and run
    rerank: bool = False


SCENARIOS = (
    EmbScenario("embd 1x1", 1, 1, 200),
    EmbScenario("embd 1x64", 1, 64, 8),
    EmbScenario("embd 32x1", 32, 1, 12),
)
RERANK_SCENARIOS = (EmbScenario("rerank 64", 1, 64, 8, rerank=True),)
QUERY = "Which animals live in the mountains of China?"


def texts(n: int, salt: int = 0) -> list[str]:
    """n different sentences of 10-20 words (MiniLM tokens ~ words)."""
    return [" ".join(_WORDS[(i * 7 + j * 3 + salt) % len(_WORDS)] for j in range(10 + i % 11))
            for i in range(n)]


_WORDS = ("panda", "bamboo", "mountain", "river", "city", "bear", "forest", "winter", "light",
          "market", "stone", "song", "window", "garden", "train", "ocean", "paper", "music",
          "bridge", "cloud")


# -- clients ----------------------------------------------------------------------------------
class HttpEmbed:
    def __init__(self, url: str, rerank: bool) -> None:
        self.url, self.rerank = url, rerank
        self._local = threading.local()

    def _client(self) -> httpx.Client:
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = httpx.Client(base_url=self.url, timeout=120.0)
        return client

    def __call__(self, inputs: list[str]) -> int:
        if self.rerank:
            r = self._client().post("/rerank", json={"query": QUERY, "documents": inputs})
            r.raise_for_status()
            return len(r.json()["results"])
        r = self._client().post("/v1/embeddings", json={"input": inputs})
        r.raise_for_status()
        return len(r.json()["data"])


class GrpcEmbed:
    def __init__(self, address: str, rerank: bool) -> None:
        self.channel = grpc.insecure_channel(address)
        self.stub = service_pb2_grpc.LlamaServerStub(self.channel)
        self.rerank = rerank

    def __call__(self, inputs: list[str]) -> int:
        if self.rerank:
            resp = self.stub.Rerank(embedding_pb2.RerankRequest(query=QUERY, documents=inputs),
                                    timeout=120)
            return len(resp.results)
        req = embedding_pb2.EmbedRequest()
        req.input.list_value.extend(inputs)
        return len(self.stub.OpenAIEmbed(req, timeout=120).data)


def measure(call: Call, sc: EmbScenario, salt: int) -> float:
    """Inputs answered per second over one run of the scenario."""
    work = [texts(sc.inputs, salt + c) for c in range(sc.clients)]
    done = [0] * sc.clients
    errors: list[BaseException] = []

    def client(c: int) -> None:
        try:
            for _ in range(sc.requests):
                done[c] += call(work[c])
        except BaseException as e:  # reported after the run
            errors.append(e)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(sc.clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{sc.name}: {errors[0]!r}")
    return sum(done) / elapsed


# -- parity -----------------------------------------------------------------------------------
def max_diff(a: Sequence[float], b: Sequence[float]) -> float:
    if len(a) != len(b):
        return math.inf
    return max((abs(x - y) for x, y in zip(a, b, strict=True)), default=0.0)


def answers(url: str, inputs: list[str], rerank: bool) -> list[list[float]]:
    """One server's vectors (or [score]) for `inputs`, by input index."""
    if rerank:
        body = {"query": QUERY, "documents": inputs}
        results = httpx.post(url + "/rerank", json=body, timeout=120).json()["results"]
        return [[r["relevance_score"]] for r in sorted(results, key=lambda r: r["index"])]
    data = httpx.post(url + "/v1/embeddings", json={"input": inputs}, timeout=120).json()
    return [d["embedding"] for d in data["data"]]


def parity(ours: str, theirs: str, rerank: bool) -> tuple[float, float]:
    """Largest differences between the two servers' answers: each input alone in a request
    (the same computation: checked against TOLERANCE), and 16 inputs in one request. Batched,
    which inputs share a ubatch depends on timing in either server, and llama.cpp's results
    move with the ubatch's size (its F16 matrix products take another path for larger
    batches), so that figure is reported, not checked."""
    inputs = texts(16, 99)
    alone = max(max_diff(a, b) for text in inputs[:8]
                for a, b in zip(answers(ours, [text], rerank), answers(theirs, [text], rerank),
                                strict=True))
    together = max(max_diff(a, b) for a, b in zip(answers(ours, inputs, rerank),
                                                  answers(theirs, inputs, rerank), strict=True))
    return alone, together


# -- one model's run --------------------------------------------------------------------------
@dataclass
class EmbResult:
    samples: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    parity: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def run_model(settings: ServerSettings, server_bin: Path | None, scenarios: Sequence[EmbScenario],
              reps: int, bridge: bool, log_dir: Path, result: EmbResult, label: str) -> None:
    rerank = scenarios[0].rerank
    ours = start_our_service(settings, log_dir, bridge=True)
    theirs = start_llama_server(server_bin, settings, log_dir) if server_bin else None
    try:
        paths: dict[str, Call] = {"grpc": GrpcEmbed(ours.grpc_address, rerank)}
        if bridge and ours.rest_url:
            paths["bridge"] = HttpEmbed(ours.rest_url, rerank)
        if theirs is not None:
            paths["llama-server"] = HttpEmbed(theirs[1], rerank)
            alone, together = parity(ours.rest_url, theirs[1], rerank)
            result.parity[label] = alone
            result.parity[label + ", batched"] = together
            say(f"{label}: largest difference from llama-server {alone:.2e} alone, "
                f"{together:.2e} batched")
            if not alone <= TOLERANCE:
                result.errors.append(f"{label}: answers differ from llama-server's by "
                                     f"{alone:.2e} (> {TOLERANCE})")
        names = list(paths)
        for sc in scenarios:
            measure(paths[names[0]], sc, 0)  # warm-up
        for rep in range(reps):
            for sc in scenarios:
                order = names[rep % len(names):] + names[:rep % len(names)]
                for name in order:
                    rate = measure(paths[name], sc, rep)
                    result.samples.setdefault((sc.name, name), []).append(rate)
            say(f"{label}: run {rep + 1}/{reps} done")
    finally:
        ours.server.stop()
        if theirs is not None:
            theirs[0].stop()


def run_embedding_bench(server_bin: Path | None, threads: int, gpu_layers: int, reps: int,
                        bridge: bool, out: Path, extra: tuple[str, ...] = ()) -> EmbResult:
    from native.testmodels import ensure_model

    def settings(model: str, flag: str) -> ServerSettings:
        return ServerSettings(ensure_model(model), ctx=2048, parallel=4, threads=threads,
                              batch=512, ubatch=512, gpu_layers=gpu_layers, extra=(flag, *extra))

    result = EmbResult()
    for label, flag, scenarios in (("minilm", "--embedding", SCENARIOS),
                                   ("reranker", "--reranking", RERANK_SCENARIOS)):
        model = "minilm" if label == "minilm" else "minilm-reranker"
        say(f"embeddings: {label}, {len(scenarios)} scenarios x {reps} runs per path")
        run_model(settings(model, flag), server_bin, scenarios, reps, bridge, out, result, label)
    return result


def write_results(result: EmbResult, out: Path) -> str:
    """Append the table to results.md (made if missing), the samples to embeddings.json."""
    text = "\n## Embeddings and reranking\n\n" + table(result) + "\n"
    with (out / "results.md").open("a", encoding="utf-8") as f:
        f.write(text)
    samples = {f"{name} / {path}": v for (name, path), v in result.samples.items()}
    (out / "embeddings.json").write_text(json.dumps(
        {"samples": samples, "parity": result.parity, "errors": result.errors}, indent=1))
    return text


def table(result: EmbResult) -> str:
    """Median inputs/s per scenario and path, and ours / llama-server."""
    lines = ["| scenario | path | inputs/s (median) | runs | / llama-server |",
             "| --- | --- | ---: | ---: | ---: |"]
    for (name, path), values in result.samples.items():
        med = statistics.median(values)
        base = result.samples.get((name, "llama-server"))
        ratio = f"{med / statistics.median(base):.2f}" if base and path != "llama-server" else ""
        lines.append(f"| {name} | {path} | {med:,.1f} | {len(values)} | {ratio} |")
    for label, diff in result.parity.items():
        checked = "reported only" if label.endswith("batched") else f"tolerance {TOLERANCE}"
        lines.append(f"\n{label}: largest difference of our answers from llama-server's: "
                     f"{diff:.2e} ({checked})")
    return "\n".join(lines)
