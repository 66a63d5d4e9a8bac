"""llama-server's REST API through a real Envoy (grpc_json_transcoder) in front of the service:
the sidecar layout, one replica. Answers are checked against the same calls made over gRPC;
tests/test_two_front_doors.py compares them with the REST bridge's byte for byte."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from envoy_harness import EnvoyProcess, completed, post_sse, sse_events, wait_until
from grpc_harness import ServiceProcess, greedy, running_service
from llama.v1 import server_pb2, service_pb2_grpc, tokenize_pb2

from service.server import HOLD_LOAD_ENV

pytestmark = pytest.mark.slow
HTTP_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
LOADING_BODY = {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}


@pytest.fixture(scope="module")
def sidecar(tiny_bpe_path: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServiceProcess,
                                                                          EnvoyProcess]]:
    with running_service(tiny_bpe_path, parallel=2) as svc, \
            EnvoyProcess.start([svc.address], tmp_path_factory.mktemp("envoy")) as envoy:
        yield svc, envoy


@pytest.fixture(scope="module")
def client(sidecar: tuple[ServiceProcess, EnvoyProcess]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sidecar[1].base_url, timeout=HTTP_TIMEOUT) as c:
        yield c


@pytest.fixture(scope="module")
def stub(sidecar: tuple[ServiceProcess, EnvoyProcess]) -> Any:
    """A gRPC stub straight to the service, for the reference answers."""
    return sidecar[0].stub()


def test_health_is_llama_servers(client: httpx.Client) -> None:
    for path in ("/health", "/v1/health"):
        response = client.get(path)
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}


def test_completion_plain_is_one_json_body(client: httpx.Client, stub: Any) -> None:
    expected = greedy(stub, "The sky is", 8)
    response = client.post("/completion", json={
        "prompt": "The sky is", "n_predict": 8, "temperature": 0, "cache_prompt": True,
        "return_tokens": True})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert response.headers["x-request-id"].startswith("cmpl-")  # for POST /cancel
    final = response.json()
    assert final["content"] == expected.content
    assert final["tokens"] == expected.tokens  # only with return_tokens, as llama-server
    assert final["stop"] is True and final["stop_type"] == "limit"
    assert final["tokens_predicted"] == 8
    assert "id" not in final  # llama-server's native objects have none
    assert final["timings"]["predicted_n"] == 8
    assert final["generation_settings"]["n_predict"] == 8
    # no helper or gRPC headers reach the client
    assert not {"x-http-status", "grpc-status", "grpc-message"} & set(response.headers)


def test_completion_streaming_events(client: httpx.Client, stub: Any) -> None:
    expected = greedy(stub, "Once upon a time", 6)
    response, events = post_sse(client, "/completion", {
        "prompt": "Once upon a time", "n_predict": 6, "temperature": 0, "stream": True,
        "return_tokens": True})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    *chunks, final = events
    assert all(e["stop"] is False for e in chunks)
    assert completed(events) and final["stop_type"] == "limit"
    assert "".join(e["content"] for e in events) == expected.content
    assert [t for e in events for t in e["tokens"]] == expected.tokens
    assert not response.text.endswith("data: [DONE]\n\n")  # native streams have none


def test_chat_stream_ends_with_done(client: httpx.Client) -> None:
    response = client.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True})
    assert response.status_code == 200
    assert response.text.endswith("\n\ndata: [DONE]\n\n")
    first, *_ = sse_events(response.text)
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": None}


def test_completions_alias_path(client: httpx.Client) -> None:
    response, events = post_sse(client, "/completions", {"prompt": "a", "n_predict": 2,
                                                         "stream": True})
    assert response.status_code == 200 and completed(events)


def test_tokenize_detokenize(client: httpx.Client, stub: Any) -> None:
    text = "Hello world, hello Envoy"
    expected = stub.Tokenize(tokenize_pb2.TokenizeRequest(content=text), timeout=10)
    response = client.post("/tokenize", json={"content": text})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    body = response.json()
    assert body["tokens"] == list(expected.tokens) and body["tokens"]
    response = client.post("/detokenize", json={"tokens": body["tokens"]})
    assert response.status_code == 200
    assert response.json() == {"content": text}


def test_models(client: httpx.Client, sidecar: tuple[ServiceProcess, EnvoyProcess]) -> None:
    for path in ("/v1/models", "/models"):
        response = client.get(path)
        assert response.status_code == 200
        body = response.json()
        assert body["object"] == "list"
        (model,) = body["data"]
        assert model["object"] == "model" and model["owned_by"] == "llamacpp"
        assert model["id"].endswith(".gguf")
        assert isinstance(model["created"], int)  # uint32: a JSON number, not a string
        assert model["meta"]["n_vocab"] > 0


def test_invalid_request_is_http_400(client: httpx.Client) -> None:
    # refused by the service before any event: llama-server's status and error body
    response = client.post("/completion", json={"prompt": "a", "n_probs": -5, "stream": True})
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    error = response.json()["error"]
    assert error["code"] == 400 and error["type"] == "invalid_request_error"
    assert "n_probs" in error["message"]


def test_unparsable_body_is_http_400(client: httpx.Client) -> None:
    # the body reaches the service as it came; the bridge's parser words the error
    response = client.post("/completion", json={"prompt": "a", "temperature": "hot"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == 400 and error["type"] == "invalid_request_error"
    assert "temperature" in error["message"]


def test_unknown_path_is_llama_servers_404(client: httpx.Client) -> None:
    response = client.get("/no/such/path")
    assert response.status_code == 404
    assert response.json() == {
        "error": {"code": 404, "message": "File Not Found", "type": "not_found_error"}}


def test_native_grpc_through_the_same_port(sidecar: tuple[ServiceProcess, EnvoyProcess]) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{sidecar[1].port}") as channel:
        stub = service_pb2_grpc.LlamaServerStub(channel)
        result = greedy(stub, "gRPC via Envoy", 4)
    assert result.code == grpc.StatusCode.OK
    assert result.final.tokens_predicted == 4


def test_api_key_reaches_the_service(tiny_bpe_path: Path, tmp_path: Path) -> None:
    with running_service(tiny_bpe_path, "--api-key", "sesame", parallel=1) as svc, \
            EnvoyProcess.start([svc.address], tmp_path) as envoy, \
            httpx.Client(base_url=envoy.base_url, timeout=HTTP_TIMEOUT) as client:
        missing = client.post("/tokenize", json={"content": "hi"})
        wrong = client.post("/tokenize", json={"content": "hi"},
                            headers={"Authorization": "Bearer nope"})
        right = client.post("/tokenize", json={"content": "hi"},
                            headers={"Authorization": "Bearer sesame"})
        stream, events = post_sse(client, "/completion", {"prompt": "hi", "n_predict": 2,
                                                          "stream": True},
                                  headers={"Authorization": "Bearer sesame"})
        denied_stream = client.post("/completion", json={"prompt": "hi", "n_predict": 2})
        assert (missing.status_code, wrong.status_code) == (401, 401)
        # the bridge's words (llama-server's): one message for a missing or a wrong key
        for refused in (missing, wrong):
            assert refused.json() == {"error": {"code": 401, "message": "Invalid API Key",
                                                "type": "authentication_error"}}
        assert right.status_code == 200 and right.json()["tokens"]
        assert stream.status_code == 200 and completed(events)
        assert denied_stream.status_code == 401
        # public, as in llama-server
        assert client.get("/health").status_code == 200
        assert client.get("/props").status_code == 200


def test_health_is_503_while_the_model_loads(tiny_bpe_path: Path, tmp_path: Path) -> None:
    hold = tmp_path / "hold-load"
    hold.touch()
    svc = ServiceProcess.start(tiny_bpe_path, parallel=1, env={HOLD_LOAD_ENV: str(hold)},
                               wait=False)
    try:
        with EnvoyProcess.start([svc.address], tmp_path, "--health-interval", "0.25") as envoy, \
                httpx.Client(base_url=envoy.base_url, timeout=HTTP_TIMEOUT) as client:
            health = client.get("/health")
            assert health.status_code == 503
            assert health.json() == LOADING_BODY
            # nothing is routed to a replica that is not SERVING
            refused = client.post("/tokenize", json={"content": "hi"})
            assert refused.status_code == 503
            assert refused.json()["error"] == {
                "code": 503, "message": "no healthy upstream", "type": "unavailable_error"}
            assert envoy.host_stats()[svc.address].rq_total == 0
            hold.unlink()
            wait_until(lambda: client.get("/health").status_code == 200, 30.0, "healthy")
            assert client.get("/health").json() == {"status": "ok"}
            assert client.post("/tokenize", json={"content": "hi"}).status_code == 200
    finally:
        hold.unlink(missing_ok=True)
        svc.stop()


PROMPT = "A story that never ends, told "


def _busy_slots(client: httpx.Client) -> int:
    return sum(1 for s in client.get("/slots").json() if s["is_processing"])


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_goes_away_frees_its_slot(client: httpx.Client, stream: bool,
                                                sidecar: tuple[ServiceProcess, EnvoyProcess]
                                                ) -> None:
    """The typed generation behind LlamaServerHttp is cancelled when the HTTP client leaves,
    streaming or not, as through the bridge: a raw connection sends a generation that would
    run on until the context is full, and closes once its slot is busy."""
    body = json.dumps({"prompt": PROMPT + str(stream), "n_predict": 100000, "ignore_eos": True,
                       "stream": stream}).encode()
    request = (b"POST /completion HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    with socket.create_connection(("127.0.0.1", sidecar[1].port), timeout=30) as conn:
        conn.sendall(request)
        wait_until(lambda: _busy_slots(client) == 1, 30.0, "generating")
    wait_until(lambda: _busy_slots(client) == 0, 30.0, "the slot freed")
    # stopped by the cancel, not by a full context (the cells it left; /slots over HTTP shows
    # no prompt, as llama-server's)
    listed = sidecar[0].stub().ListSlots(server_pb2.ListSlotsRequest(), timeout=30).slots
    (slot,) = [s for s in listed if PROMPT + str(stream) in s.prompt]
    assert slot.n_prompt_tokens < slot.n_ctx - 1
