"""Helpers of the embedding and rerank tests: a real service (gRPC plus its REST bridge child)
on an embedding model, the reference a vector is checked against (llama.cpp run in this process
through `native`, one input alone in one batch), and small vector maths."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from grpc_harness import ServiceProcess, free_port, service_env
from rest.rest_harness import wait_http

import native


@dataclass
class EmbedServer:
    svc: ServiceProcess
    url: str  # the REST bridge
    stub: Any

    def post(self, path: str, body: Any) -> httpx.Response:
        return httpx.post(self.url + path, json=body, timeout=120.0)


@contextmanager
def embed_server(model: Path, *flags: str, ctx: int = 2048,
                 parallel: int = 4) -> Iterator[EmbedServer]:
    port = free_port()
    args = ["-m", str(model), "-c", str(ctx), "-np", str(parallel), "--port", str(port), *flags]
    svc = ServiceProcess.launch(args, free_port(), service_env())
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(svc, url + "/health", {200}, 90.0)
        yield EmbedServer(svc, url, svc.stub())
    finally:
        svc.stop()


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(math.fsum(x * x for x in a) * math.fsum(y * y for y in b))


def l2(v: Sequence[float]) -> float:
    return math.sqrt(math.fsum(x * x for x in v))


def max_abs_diff(a: Sequence[float], b: Sequence[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def reference_outputs(model_path: Path, tokens: list[int], pooling: str,
                      n_ubatch: int = 0) -> list[list[float]]:
    """What llama.cpp gives for `tokens` alone, in one batch (cut into ubatches of `n_ubatch`
    if given: flash attention's results depend on that cut): the pooled vector (unnormalized;
    class scores for `rank`), or every token's vector for `none`."""
    model = native.Model(model_path)
    n = max(len(tokens), 512)
    params = native.ContextParams(n_ctx=n, n_batch=n, n_ubatch=n_ubatch or n,
                                  n_seq_max=1, embeddings=True, pooling=pooling, n_threads=2)
    try:
        with native.Context(model, params) as ctx:
            batch = native.Batch(len(tokens))
            batch.add_sequence(tokens, 0, 0, output_last=True)
            batch.set_all_outputs(True)
            ctx.decode(batch)
            if pooling == "none":
                return [list(ctx.embeddings_ith(i)) for i in range(len(tokens))]
            return [list(ctx.embeddings_seq(0))]
    finally:
        model.close()


def normalized(v: Sequence[float]) -> list[float]:
    n = l2(v)
    return [x / n for x in v]
