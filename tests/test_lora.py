"""LoRA adapters end to end: the real service with `--lora` (the tiny-bpe-lora adapter that
native.testmodels generates), over gRPC and through the REST bridge.

The base model's greedy output comes from the session's plain tiny-bpe service (same -c and
-np); scale 0 must give exactly it, a non-zero scale something else, and requests with
different scales running at once each what they give alone (the scheduler never puts two
adapter sets in one decode, and a slot's cache made with one set is not reused by another).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_harness import (
    EXACT,
    GREEDY,
    CompletionResult,
    ServiceProcess,
    assert_same_generation,
    complete,
    free_port,
    service_env,
)
from llama.v1 import server_pb2
from rest.rest_harness import wait_http

from native.testmodels import ensure_model

PROMPT = "The quick brown fox"
N = 16


def _run(args: list[str]) -> ServiceProcess:
    return ServiceProcess.launch(args, free_port(), service_env())


@pytest.fixture(scope="module")
def lora_path() -> Path:
    return ensure_model("tiny-bpe-lora")


@pytest.fixture(scope="module")
def lora_service(tiny_bpe_path: Path, lora_path: Path) -> Iterator[tuple[ServiceProcess, str]]:
    """tiny-bpe with the adapter at scale 1 (-c 2048 -np 4, as the session's base service),
    its REST bridge on a known port."""
    port = free_port()
    svc = _run(["-m", str(tiny_bpe_path), "-c", "2048", "-np", "4", "--port", str(port),
                "--lora", str(lora_path)])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(svc, url + "/health", {200}, 120.0)
        yield svc, url
    finally:
        svc.stop()


@pytest.fixture()
def stub(lora_service: tuple[ServiceProcess, str]) -> Iterator[Any]:
    stub = lora_service[0].stub()
    yield stub
    # Tests may change the global scale: every test starts from the --lora scale (1).
    stub.SetLoraAdapters(server_pb2.SetLoraAdaptersRequest(
        adapters=[{"id": 0, "scale": 1.0}]))


def _gen(stub: Any, lora: list[dict[str, Any]] | None = None, **fields: Any) -> CompletionResult:
    extra = {"lora": lora} if lora is not None else {}
    r = complete(stub, prompt=PROMPT, n_predict=N, **{**EXACT, **extra, **fields})
    assert r.code == grpc.StatusCode.OK, r.details
    return r


@pytest.fixture(scope="module")
def base(grpc_service: ServiceProcess) -> CompletionResult:
    return _gen(grpc_service.stub())


def test_the_adapter_is_listed_with_its_path_and_scale(stub: Any, lora_path: Path,
                                                        lora_service: Any) -> None:
    resp = stub.ListLoraAdapters(server_pb2.ListLoraAdaptersRequest())
    assert [(a.id, a.path, a.scale) for a in resp.adapters] == [(0, str(lora_path), 1.0)]
    rest = httpx.get(lora_service[1] + "/lora-adapters", timeout=30).json()
    # as llama-server: task_name and prompt_prefix always, empty without the metadata
    assert rest == [{"id": 0, "path": str(lora_path), "scale": 1.0, "task_name": "",
                     "prompt_prefix": ""}]


def test_scale_zero_is_the_base_model_and_a_scale_changes_the_output(
        stub: Any, base: CompletionResult) -> None:
    assert_same_generation(base, _gen(stub, [{"id": 0, "scale": 0.0}]))
    adapted = _gen(stub)  # the global scale: 1
    assert adapted.tokens != base.tokens
    assert _gen(stub, [{"id": 0, "scale": 1.0}]).tokens == adapted.tokens
    half = _gen(stub, [{"id": 0, "scale": 0.5}])
    assert half.tokens not in (base.tokens, adapted.tokens)
    settings = half.final.generation_settings
    assert [(x.id, x.scale) for x in settings.lora] == [(0, 0.5)]


def test_the_global_scale_applies_to_requests_without_their_own(
        stub: Any, base: CompletionResult, lora_service: Any) -> None:
    adapted = _gen(stub)
    r = httpx.post(lora_service[1] + "/lora-adapters", json=[{"id": 0, "scale": 0.0}],
                   timeout=30)
    assert r.status_code == 200 and r.json() == {"success": True}
    assert stub.ListLoraAdapters(server_pb2.ListLoraAdaptersRequest()).adapters[0].scale == 0
    assert_same_generation(base, _gen(stub))
    # A request's own list overrides the global scales.
    assert _gen(stub, [{"id": 0, "scale": 1.0}]).tokens == adapted.tokens
    # An empty body sets every adapter to 0 too (adapters not listed get 0).
    stub.SetLoraAdapters(server_pb2.SetLoraAdaptersRequest(adapters=[{"id": 0, "scale": 1}]))
    stub.SetLoraAdapters(server_pb2.SetLoraAdaptersRequest())
    assert stub.ListLoraAdapters(server_pb2.ListLoraAdaptersRequest()).adapters[0].scale == 0


def test_concurrent_requests_with_different_scales_each_get_their_own_output(
        stub: Any) -> None:
    scales = [0.0, 1.0, 0.5, 1.0, 0.0, 0.5]
    alone = {s: _gen(stub, [{"id": 0, "scale": s}]) for s in set(scales)}
    with concurrent.futures.ThreadPoolExecutor(len(scales)) as pool:
        futures = [pool.submit(_gen, stub, [{"id": 0, "scale": s}]) for s in scales]
        results = [f.result() for f in futures]
    for s, r in zip(scales, results, strict=True):
        assert_same_generation(alone[s], r)


def test_a_slot_cache_made_with_other_adapters_is_not_reused(
        stub: Any, base: CompletionResult) -> None:
    fields = {**GREEDY, "n_probs": 2, "repeat_penalty": 1.0, "ignore_eos": True, "id_slot": 3}
    first = _gen(stub, [{"id": 0, "scale": 1.0}], **fields)
    same = _gen(stub, [{"id": 0, "scale": 1.0}], **fields)
    assert same.final.timings.cache_n > 0 and same.tokens == first.tokens
    other = _gen(stub, [{"id": 0, "scale": 0.0}], **fields)
    assert other.final.timings.cache_n == 0
    assert_same_generation(base, other)


@pytest.mark.parametrize("lora, message", [
    ([{"id": 1, "scale": 1.0}], "no LoRA adapter has id 1"),
    ([{"id": -1, "scale": 1.0}], "no LoRA adapter has id -1"),
    ([{"id": 0, "scale": 1.0}, {"id": 0, "scale": 0.5}], "listed twice"),
    ([{"id": 0, "scale": "NaN"}], "finite number"),
    ([{"id": 0, "scale": 1e6}], "finite number"),
])
def test_a_bad_request_lora_is_invalid_argument(stub: Any, lora: Any, message: str) -> None:
    r = complete(stub, prompt=PROMPT, n_predict=2, lora=lora)
    assert r.code == grpc.StatusCode.INVALID_ARGUMENT and message in r.details


@pytest.mark.parametrize("body, message", [
    ([{"id": 2, "scale": 0.5}], "no LoRA adapter has id 2"),
    ([{"id": 0, "scale": "abc"}], "scale"),
    ([{"id": 0, "scale": "Infinity"}], "finite number"),
    ({"id": 0, "scale": 0.5}, "JSON array"),
])
def test_a_bad_post_lora_adapters_is_400_and_changes_nothing(
        stub: Any, lora_service: Any, body: Any, message: str) -> None:
    r = httpx.post(lora_service[1] + "/lora-adapters", json=body, timeout=30)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]["message"]
    assert stub.ListLoraAdapters(server_pb2.ListLoraAdaptersRequest()).adapters[0].scale == 1


def test_a_bad_request_lora_through_the_bridge_is_400(lora_service: Any) -> None:
    r = httpx.post(lora_service[1] + "/completion", timeout=30, json={
        "prompt": PROMPT, "n_predict": 2, "lora": [{"id": 7, "scale": 1}]})
    assert r.status_code == 400 and "no LoRA adapter has id 7" in r.json()["error"]["message"]


def test_without_adapters_any_lora_id_is_refused(grpc_stub: Any) -> None:
    assert list(grpc_stub.ListLoraAdapters(server_pb2.ListLoraAdaptersRequest()).adapters) == []
    r = complete(grpc_stub, prompt=PROMPT, n_predict=2, lora=[{"id": 0, "scale": 1}])
    assert r.code == grpc.StatusCode.INVALID_ARGUMENT and "no adapter is loaded" in r.details


def test_init_without_apply_loads_the_adapter_at_scale_zero(tiny_bpe_path: Path,
                                                            lora_path: Path) -> None:
    svc = _run(["-m", str(tiny_bpe_path), "-c", "512", "-np", "1", "--port", str(free_port()),
                "--lora-scaled", f"{lora_path}:0.25", "--lora-init-without-apply"])
    try:
        stub = svc.stub()
        adapters = stub.ListLoraAdapters(server_pb2.ListLoraAdaptersRequest()).adapters
        assert [(a.id, a.scale) for a in adapters] == [(0, 0.0)]
    finally:
        svc.stop()
