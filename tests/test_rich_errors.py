"""Rich errors (issue 25, item 2; AIP-193) through the real service and its REST bridge: every
non-OK status carries a google.rpc ErrorInfo (reason, domain "llama.v1", metadata), a
BadRequest naming the request field when one is at fault, a RetryInfo when a retry can
succeed; a stream's in-band `error` mirrors the reason; the bridge turns a context overflow into
llama-server's exceed_context_size_error and a RetryInfo into Retry-After.

One server (-c 512 -np 1, --api-key, --max-queue 1, its bridge on a port of its own) serves
every test; the gRPC clients send the key through a channel interceptor.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from cancel_harness import ENDLESS, StreamReader, wait_load
from google.protobuf import message_factory
from grpc_harness import (
    ServiceProcess,
    chat_request,
    completion_request,
    free_port,
    service_env,
)
from llama.v1 import server_pb2, service_pb2, service_pb2_grpc, tokenize_pb2

from api_common import rich_status
from api_common.errors import DOMAIN, ERROR_KINDS, REASONS
from service.server import HOLD_LOAD_ENV

pytestmark = pytest.mark.slow
KEY = "rich-errors-key"
N_CTX = 512  # -c 512 -np 1: a slot's context
Open = Callable[[Any], StreamReader]
OVERFLOW = [1000 + i for i in range(600)]  # 600 prompt tokens
OVERFLOW_MESSAGE = ("request (600 tokens) exceeds the available context size (512 tokens), "
                    "try increasing it")  # llama-server's words (tools/server/server-context.cpp)


class _WithKey(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Adds `authorization: Bearer <KEY>` to every call."""

    def _details(self, details: Any) -> Any:
        meta = [*(details.metadata or ()), ("authorization", f"Bearer {KEY}")]
        return _Details(details.method, details.timeout, meta, details.credentials,
                        details.wait_for_ready, details.compression)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)


@dataclass(frozen=True)
class _Details(grpc.ClientCallDetails):  # type: ignore[misc]
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


@dataclass
class Served:
    svc: ServiceProcess
    url: str  # the REST bridge
    stub: Any  # keyed

    def bare_stub(self) -> Any:
        return self.svc.stub()


@pytest.fixture(scope="module")
def served(tiny_bpe_path: Path) -> Iterator[Served]:
    http_port = free_port()
    args = ["-m", str(tiny_bpe_path), "-c", str(N_CTX), "-np", "1", "--port", str(http_port),
            "--api-key", KEY, "--max-queue", "1", "--context-shift"]
    svc = ServiceProcess.launch(args, free_port(), service_env())
    try:
        url = f"http://127.0.0.1:{http_port}"
        _wait_http(svc, url + "/health")
        stub = service_pb2_grpc.LlamaServerStub(grpc.intercept_channel(svc.channel(),
                                                                       _WithKey()))
        yield Served(svc, url, stub)
    finally:
        svc.stop()


def _wait_http(svc: ServiceProcess, url: str, timeout: float = 60.0, status: int = 200) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert svc.proc.poll() is None, svc.log()
        try:
            if httpx.get(url, timeout=2.0).status_code == status:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} not ready in {timeout}s:\n{svc.log()[-3000:]}")


def _http() -> httpx.Client:
    return httpx.Client(timeout=60.0, headers={"Authorization": f"Bearer {KEY}"})


def fails(call: Callable[[], Any]) -> tuple[grpc.RpcError, rich_status.Details]:
    """The error `call` raises (a unary call, or a stream read to its end) and its details."""
    with pytest.raises(grpc.RpcError) as info:
        result = call()
        if not hasattr(result, "SerializeToString"):
            list(result)
    err = info.value
    details = rich_status.decode(err)
    assert details.domain == DOMAIN, (err.code(), err.details(), details)
    return err, details


# -- invalid requests ---------------------------------------------------------------------------
@pytest.mark.parametrize(("field", "value"), [("n_keep", -5), ("n_probs", 101),
                                              ("request_id", "has space"), ("seed", -7),
                                              ("stop", ["x"] * 65), ("logit_bias", "x")])
def test_an_invalid_field_is_named_by_bad_request(served: Served, field: str,
                                                 value: Any) -> None:
    req = completion_request(prompt="Hello", n_predict=1, **{field: value})
    err, d = fails(lambda: served.stub.Completion(req, timeout=30))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert d.reason == "INVALID_FIELD" and d.metadata == {"field": field}
    assert d.field_violations == [(field, err.details())]
    assert d.retry_after is None


def test_a_chat_field_is_named_too(served: Served) -> None:
    req = chat_request(messages=[{"role": "user", "content": "Hi"}], repeat_last_n=-5)
    err, d = fails(lambda: served.stub.ChatCompletion(req, timeout=30))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert d.reason == "INVALID_FIELD"
    assert d.field_violations == [("repeat_last_n", err.details())]


def test_an_error_of_no_one_field_has_error_info_only(served: Served) -> None:
    req = completion_request(prompt="Hello", grammar="root ::= \"a\"",
                             json_schema={"type": "string"})
    err, d = fails(lambda: served.stub.Completion(req, timeout=30))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert d.reason == "INVALID_ARGUMENT" and d.field_violations == [] and d.metadata == {}


# -- context overflow ---------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [True, False])
def test_a_context_overflow_says_how_many_tokens(served: Served, stream: bool) -> None:
    req = completion_request(prompt=OVERFLOW, n_predict=1, stream=stream)
    err, d = fails(lambda: served.stub.Completion(req, timeout=30))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details() == OVERFLOW_MESSAGE
    assert d.reason == "CONTEXT_OVERFLOW"
    assert d.metadata == {"n_prompt_tokens": "600", "n_ctx": str(N_CTX)}


@pytest.mark.parametrize("stream", [True, False])
def test_a_chat_context_overflow_too(served: Served, stream: bool) -> None:
    req = chat_request(messages=[{"role": "user", "content": "word " * 700}], stream=stream)
    err, d = fails(lambda: served.stub.ChatCompletion(req, timeout=30))
    assert d.reason == "CONTEXT_OVERFLOW" and d.metadata["n_ctx"] == str(N_CTX)
    n = int(d.metadata["n_prompt_tokens"])
    assert n > N_CTX and err.details() == (
        f"request ({n} tokens) exceeds the available context size ({N_CTX} tokens), try "
        "increasing it")


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("path", "body"), [
    ("/completion", {"prompt": OVERFLOW, "n_predict": 1}),
    ("/v1/completions", {"prompt": OVERFLOW, "max_tokens": 1}),
])
def test_the_bridge_answers_a_context_overflow_as_llama_server(
        served: Served, path: str, body: dict[str, Any], stream: bool) -> None:
    with _http() as http:
        r = http.post(served.url + path, json={**body, "stream": stream})
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {"error": {"code": 400, "message": OVERFLOW_MESSAGE,
                                  "type": "exceed_context_size_error",
                                  "n_prompt_tokens": 600, "n_ctx": N_CTX}}


def test_the_bridge_answers_a_chat_overflow_with_the_counts(served: Served) -> None:
    with _http() as http:
        r = http.post(served.url + "/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "word " * 700}], "stream": True})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "exceed_context_size_error" and error["n_ctx"] == N_CTX
    assert error["n_prompt_tokens"] > N_CTX and "reason" not in error


# -- retry later --------------------------------------------------------------------------------
def test_a_full_queue_says_when_to_retry(served: Served, open_stream: Open) -> None:
    stub = served.stub
    a = open_stream(stub.Completion(completion_request(prompt="Hold the slot", **ENDLESS)))
    a_id = a.first().id
    b = open_stream(stub.Completion(completion_request(prompt="Wait", **ENDLESS)))
    wait_load(stub, lambda ld: ld.n_processing == 1 and ld.n_waiting == 1, "B waits")
    try:
        req = completion_request(prompt="One too many", n_predict=1)
        err, d = fails(lambda: stub.Completion(req, timeout=30))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert d.reason == "QUEUE_FULL" and d.retry_after == 1.0
        with _http() as http:
            r = http.post(served.url + "/completion", json={"prompt": "x", "n_predict": 1})
        assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
        assert r.json()["error"]["type"] == "unavailable_error"
    finally:
        assert stub.Cancel(server_pb2.CancelRequest(id=a_id), timeout=10).found
        b_id = b.first().id
        assert stub.Cancel(server_pb2.CancelRequest(id=b_id), timeout=10).found
    assert a.end() == b.end() == grpc.StatusCode.CANCELLED
    wait_load(stub, lambda ld: ld.n_processing == ld.n_waiting == 0, "idle")


def test_a_running_request_id_is_already_exists(served: Served, open_stream: Open) -> None:
    stub = served.stub
    a = open_stream(stub.Completion(completion_request(prompt="Mine", request_id="dup-1",
                                                       **ENDLESS)))
    assert a.first().id == "dup-1"
    try:
        req = completion_request(prompt="Again", request_id="dup-1", n_predict=1)
        err, d = fails(lambda: stub.Completion(req, timeout=30))
        assert err.code() == grpc.StatusCode.ALREADY_EXISTS
        assert d.reason == "ALREADY_EXISTS" and d.metadata == {"request_id": "dup-1"}
    finally:
        assert stub.Cancel(server_pb2.CancelRequest(id="dup-1"), timeout=10).found
    assert a.end() == grpc.StatusCode.CANCELLED


def test_a_loading_model_says_when_to_retry(tiny_bpe_path: Path, tmp_path: Path) -> None:
    hold = tmp_path / "hold"  # the model load waits while this file exists (HOLD_LOAD_ENV)
    hold.touch()
    http_port = free_port()
    args = ["-m", str(tiny_bpe_path), "-c", str(N_CTX), "-np", "1", "--port", str(http_port)]
    svc = ServiceProcess.launch(args, free_port(), service_env({HOLD_LOAD_ENV: str(hold)}),
                                wait=False)
    try:
        _wait_http(svc, f"http://127.0.0.1:{http_port}/health", status=503)
        stub = svc.stub()
        err, d = fails(lambda: stub.Tokenize(tokenize_pb2.TokenizeRequest(content="hi"),
                                             timeout=10))
        assert err.code() == grpc.StatusCode.UNAVAILABLE and err.details() == "Loading model"
        assert d.reason == "LOADING_MODEL" and d.retry_after == 1.0
        r = httpx.post(f"http://127.0.0.1:{http_port}/tokenize", json={"content": "hi"},
                       timeout=30)
        assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
        assert r.json() == {"error": {"code": 503, "message": "Loading model",
                                      "type": "unavailable_error"}}
    finally:
        hold.unlink()
        svc.stop()


# -- in-band errors -----------------------------------------------------------------------------
def test_a_streams_last_message_mirrors_the_status(served: Served, open_stream: Open) -> None:
    stub = served.stub
    a = open_stream(stub.Completion(completion_request(prompt="Cancel me", **ENDLESS)))
    assert stub.Cancel(server_pb2.CancelRequest(id=a.first().id), timeout=10).found
    assert a.end() == grpc.StatusCode.CANCELLED
    last = a.messages[-1]
    assert last.error.reason == "CANCELLED" and last.error.type == "cancelled_error"
    assert last.error.code == 499
    d = rich_status.decode(a.call)
    assert d.domain == DOMAIN and d.reason == last.error.reason


# -- authentication and unknown methods ----------------------------------------------------------
@pytest.mark.parametrize(("metadata", "why"), [
    ((), "missing"), ((("authorization", "Bearer wrong"),), "invalid")])
def test_a_refused_key_says_why(served: Served, metadata: Any, why: str) -> None:
    stub = served.bare_stub()
    unary_err, unary = fails(lambda: stub.Tokenize(
        tokenize_pb2.TokenizeRequest(content="hi"), timeout=10, metadata=metadata))
    stream_err, stream = fails(lambda: stub.Completion(
        completion_request(prompt="hi"), timeout=10, metadata=metadata))
    for err, d in ((unary_err, unary), (stream_err, stream)):
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        assert d.reason == "UNAUTHENTICATED" and d.metadata == {"api_key": why}
        assert d.retry_after is None


def _unserved() -> list[str]:
    from service.servicer import LlamaServicer  # the RPCs it leaves to the generated base

    base = service_pb2_grpc.LlamaServerServicer
    return [name for name in dir(base) if name[:1].isupper()
            and getattr(LlamaServicer, name) is getattr(base, name)]


@pytest.mark.parametrize("method", ["/llama.v1.LlamaServer/NoSuchMethod",
                                    *(f"/llama.v1.LlamaServer/{n}" for n in _unserved())])
def test_an_rpc_not_served_says_so(served: Served, method: str) -> None:
    call = served.svc.channel().unary_unary(method)
    err, d = fails(lambda: call(b"", timeout=10,
                                metadata=(("authorization", f"Bearer {KEY}"),)))
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED and err.details()
    assert d.reason == "NOT_SUPPORTED" and d.metadata == {"method": method}


def _rpcs() -> list[Any]:
    return list(service_pb2.DESCRIPTOR.services_by_name["LlamaServer"].methods)


@pytest.mark.parametrize("rpc", _rpcs(), ids=lambda m: m.name)
def test_every_failure_of_every_rpc_carries_error_info(served: Served, rpc: Any) -> None:
    """An empty request to each RPC: served, or refused with details of the status's kind."""
    response = message_factory.GetMessageClass(rpc.output_type)
    path = f"/llama.v1.LlamaServer/{rpc.name}"
    kw = {"request_serializer": lambda r: r.SerializeToString(),
          "response_deserializer": response.FromString}
    request = message_factory.GetMessageClass(rpc.input_type)()
    auth = (("authorization", f"Bearer {KEY}"),)
    channel = served.svc.channel()
    try:
        if rpc.client_streaming:  # one empty message (ImportSlot)
            channel.stream_unary(path, **kw)(iter([request]), timeout=30, metadata=auth)
        elif rpc.server_streaming:
            list(channel.unary_stream(path, **kw)(request, timeout=30, metadata=auth))
        else:
            channel.unary_unary(path, **kw)(request, timeout=30, metadata=auth)
    except grpc.RpcError as err:
        d = rich_status.decode(err)
        assert d.domain == DOMAIN and d.reason in REASONS, (err.code(), err.details(), d)
        assert ERROR_KINDS[REASONS[d.reason].kind].grpc_code == err.code()
