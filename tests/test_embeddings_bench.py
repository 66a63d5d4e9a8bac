"""The benchmark's embedding and rerank path (bench/embeddings.py), small: one tiny scenario per
model against our service (and llama-server when it is built, with the parity check), the
table and files it writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.embeddings import EmbResult, EmbScenario, run_model, write_results
from bench.llama_build import cached_server_build
from bench.servers import ServerSettings
from native.testmodels import ensure_model

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("model", "flag", "rerank"), [("minilm", "--embedding", False),
                                                        ("minilm-reranker", "--reranking", True)])
def test_a_small_run_measures_every_path(tmp_path: Path, model: str, flag: str,
                                         rerank: bool) -> None:
    build = cached_server_build()
    settings = ServerSettings(ensure_model(model), ctx=2048, parallel=4, threads=1, batch=512,
                              ubatch=512, extra=(flag,))
    scenarios = [EmbScenario("tiny 2x3", 2, 3, 2, rerank=rerank)]
    result = EmbResult()
    run_model(settings, build.llama_server if build else None, scenarios, 1, True, tmp_path,
              result, model)
    paths = {"grpc", "bridge"} | ({"llama-server"} if build else set())
    assert {p for (_, p) in result.samples} == paths
    assert all(len(v) == 1 and v[0] > 0 for v in result.samples.values())
    if build:
        assert result.parity[model] <= 1e-4 and not result.errors
    text = write_results(result, tmp_path)
    assert "| tiny 2x3 | grpc |" in text
    saved = json.loads((tmp_path / "embeddings.json").read_text())
    assert set(saved["samples"]) == {f"tiny 2x3 / {p}" for p in paths}
