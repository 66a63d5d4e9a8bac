"""Issue 22, item 7: security over the three doors of one keyed server: gRPC, the REST bridge,
and Envoy (plain, and with TLS on its listener). The API key is enforced identically (streaming
routes, metrics, slots, the web page's calls; the same public routes); CORS answers as
llama-server documents it; TLS serves gRPC, the bridge and Envoy; the key never reaches a log.
Keys are compared in constant time by api_common.auth.key_matches (hmac.compare_digest over
every key), which the service and the bridge both call: checked here by reading the code path."""

from __future__ import annotations

import contextlib
import inspect
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from envoy_harness import EnvoyProcess
from grpc_harness import chat_request, completion_request
from llama.v1 import server_pb2, service_pb2_grpc, tokenize_pb2
from rest.rest_harness import RestServer

from api_common import auth as common_auth
from rest_bridge import auth as bridge_auth
from service import auth as service_auth

pytestmark = pytest.mark.slow
KEY = "sk-security-3b9f0e17c2d84a55"  # unique enough that any copy of it in a log is a leak
BAD = "sk-wrong-key-000000000000"
TIMEOUT = httpx.Timeout(60.0, connect=5.0)
CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "stream": True}

# (method, path, body): the protected routes, streaming ones among them, and the web page's.
PROTECTED = [
    ("POST", "/completion", {"prompt": "a", "n_predict": 2, "stream": True}),
    ("POST", "/v1/completions", {"prompt": "a", "max_tokens": 2, "stream": True}),
    ("POST", "/v1/chat/completions", CHAT),  # the web page's chat call
    ("POST", "/tokenize", {"content": "a"}),
    ("POST", "/apply-template", {"messages": [{"role": "user", "content": "hi"}]}),
    ("GET", "/metrics", None),
    ("GET", "/slots", None),
    ("GET", "/v1/models", None),
    ("GET", "/load", None),
]
PUBLIC = [("GET", "/health", None), ("GET", "/props", None)]  # the web page's first call


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key, cert = tmp / "key.pem", tmp / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True)
    return key, cert


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def server(tiny_bpe_path: Path) -> Iterator[RestServer]:
    srv = RestServer(tiny_bpe_path, "--api-key", KEY, "--metrics", "--slots", "-v",
                     ctx=2048, parallel=2)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def envoy(server: RestServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyProcess]:
    with EnvoyProcess.start([server.grpc_target], tmp_path_factory.mktemp("envoy")) as e:
        yield e


@pytest.fixture(scope="module")
def doors(server: RestServer, envoy: EnvoyProcess) -> dict[str, str]:
    return {"bridge": server.url, "envoy": envoy.base_url}


def headers_for(key: str | None, style: str = "bearer") -> dict[str, str]:
    if key is None:
        return {}
    return {"x-api-key": key} if style == "x-api-key" else {"authorization": f"Bearer {key}"}


def call(base: str, method: str, path: str, body: Any, headers: dict[str, str],
         verify: Any = True) -> httpx.Response:
    with httpx.Client(base_url=base, timeout=TIMEOUT, verify=verify) as client:
        return client.request(method, path, json=body, headers=headers)


# -- the API key -----------------------------------------------------------------------------
@pytest.mark.parametrize("door", ["bridge", "envoy"])
@pytest.mark.parametrize(("method", "path", "body"), PROTECTED)
def test_http_routes_need_the_key(doors: dict[str, str], door: str, method: str, path: str,
                                  body: Any) -> None:
    base = doors[door]
    for key in (None, BAD, KEY.upper(), KEY + "x", KEY[:-1]):
        r = call(base, method, path, body, headers_for(key))
        assert r.status_code == 401, (door, path, key, r.status_code, r.text[:200])
        assert r.json() == {"error": {"code": 401, "message": "Invalid API Key",
                                      "type": "authentication_error"}}
        assert KEY not in r.text
    for style in ("bearer", "x-api-key"):
        r = call(base, method, path, body, headers_for(KEY, style))
        assert r.status_code == 200, (door, path, style, r.status_code, r.text[:300])


@pytest.mark.parametrize("door", ["bridge", "envoy"])
@pytest.mark.parametrize(("method", "path", "body"), PUBLIC)
def test_public_routes_are_the_same_at_every_door(doors: dict[str, str], door: str,
                                                  method: str, path: str, body: Any) -> None:
    r = call(doors[door], method, path, body, {})
    assert r.status_code == 200, r.text[:200]


def grpc_calls(stub: Any) -> dict[str, Any]:
    """Each protected RPC (the gRPC side of PROTECTED), run to its end."""
    return {
        "Completion": lambda md: list(stub.Completion(
            completion_request(prompt="a", n_predict=2), metadata=md, timeout=60)),
        "ChatCompletion": lambda md: list(stub.ChatCompletion(chat_request(
            messages=[{"role": "user", "content": "hi"}], n_predict=2), metadata=md,
            timeout=60)),
        "Tokenize": lambda md: stub.Tokenize(tokenize_pb2.TokenizeRequest(content="a"),
                                             metadata=md, timeout=60),
        "GetMetrics": lambda md: stub.GetMetrics(server_pb2.GetMetricsRequest(), metadata=md,
                                                 timeout=60),
        "ListSlots": lambda md: stub.ListSlots(server_pb2.ListSlotsRequest(), metadata=md,
                                               timeout=60),
        "ListModels": lambda md: stub.ListModels(server_pb2.ListModelsRequest(), metadata=md,
                                                 timeout=60),
        "GetLoad": lambda md: stub.GetLoad(server_pb2.GetLoadRequest(), metadata=md,
                                           timeout=60),
    }


def test_grpc_needs_the_key(server: RestServer) -> None:
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = service_pb2_grpc.LlamaServerStub(channel)
        for name, run in grpc_calls(stub).items():
            for md in ((), (("authorization", f"Bearer {BAD}"),),
                       (("authorization", f"Bearer {KEY[:-1]}"),)):
                with pytest.raises(grpc.RpcError) as err:
                    run(md)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED, name
                assert KEY not in (err.value.details() or "")
            run((("authorization", f"Bearer {KEY}"),))  # served
        # Public, as GET /props and /health are over HTTP.
        stub.GetProps(server_pb2.GetPropsRequest(), timeout=30)


def test_keys_are_compared_in_constant_time() -> None:
    source = inspect.getsource(common_auth.key_matches)
    assert "hmac.compare_digest" in source and "return found" in source
    assert service_auth.key_matches is common_auth.key_matches
    assert bridge_auth.key_matches is common_auth.key_matches  # type: ignore[attr-defined]
    # Every key is compared, whichever matches: no early return.
    assert common_auth.key_matches("b", ["a", "b", "c"])
    assert not common_auth.key_matches("", ["a"])
    assert not common_auth.key_matches("a" * 10_000, ["a"])


# -- CORS, as llama-server documents it ------------------------------------------------------
@pytest.mark.parametrize("door", ["bridge", "envoy"])
def test_cors(doors: dict[str, str], door: str) -> None:
    origin = "https://app.example"
    preflight = httpx.options(doors[door] + "/v1/chat/completions", timeout=TIMEOUT, headers={
        "origin": origin, "access-control-request-method": "POST",
        "access-control-request-headers": "authorization, content-type"})
    assert preflight.status_code in (200, 204), preflight.text  # no key needed to ask
    assert preflight.headers["access-control-allow-origin"] in (origin, "*")
    assert "POST" in preflight.headers["access-control-allow-methods"]
    r = call(doors[door], "POST", "/tokenize", {"content": "a"},
             {**headers_for(KEY), "origin": origin})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] in (origin, "*")
    refused = call(doors[door], "POST", "/tokenize", {"content": "a"}, {"origin": origin})
    assert refused.status_code == 401  # a browser can read the refusal too
    assert refused.headers["access-control-allow-origin"] in (origin, "*")


# -- TLS at every door -----------------------------------------------------------------------
def test_tls_on_grpc_and_the_bridge(tiny_bpe_path: Path, certs: tuple[Path, Path]) -> None:
    key, cert = certs
    srv = RestServer(tiny_bpe_path, "--api-key", KEY, "--ssl-key-file", str(key),
                     "--ssl-cert-file", str(cert), ctx=1024, parallel=1)
    srv.url = srv.url.replace("http://", "https://")
    try:
        wait_https(srv, cert)
        r = call(srv.url, "POST", "/completion", {"prompt": "a", "n_predict": 2},
                 headers_for(KEY), verify=trusting(cert))
        assert r.status_code == 200 and r.json()["tokens_predicted"] == 2
        with pytest.raises(httpx.TransportError):  # plain HTTP is not served
            httpx.get(srv.url.replace("https://", "http://") + "/health", timeout=5)
        creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        target = srv.grpc_target.replace("127.0.0.1", "localhost")
        with grpc.secure_channel(target, creds) as channel:
            stub = service_pb2_grpc.LlamaServerStub(channel)
            out = stub.Tokenize(tokenize_pb2.TokenizeRequest(content="a"), timeout=30,
                                metadata=(("authorization", f"Bearer {KEY}"),))
            assert list(out.tokens)
    finally:
        srv.stop()


def trusting(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


def wait_https(srv: RestServer, cert: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert srv.proc.poll() is None, srv.output()
        try:
            if httpx.get(srv.url + "/health", verify=trusting(cert), timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(srv.output()[-3000:])


def test_tls_on_envoys_listener(server: RestServer, certs: tuple[Path, Path],
                                tmp_path: Path) -> None:
    key, cert = certs
    with EnvoyProcess.start([server.grpc_target], tmp_path, "--ssl-cert-file", str(cert),
                            "--ssl-key-file", str(key)) as envoy:
        base = envoy.base_url.replace("http://", "https://")
        r = call(base, "POST", "/completion", {"prompt": "a", "n_predict": 2},
                 headers_for(KEY), verify=trusting(cert))
        assert r.status_code == 200 and r.json()["tokens_predicted"] == 2
        assert call(base, "GET", "/slots", None, {}, verify=trusting(cert)).status_code == 401
        with pytest.raises(httpx.TransportError):
            httpx.get(envoy.base_url + "/health", timeout=5)
        creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(f"localhost:{envoy.port}", creds) as channel:
            stub = service_pb2_grpc.LlamaServerStub(channel)
            out = stub.Tokenize(tokenize_pb2.TokenizeRequest(content="a"), timeout=30,
                                metadata=(("authorization", f"Bearer {KEY}"),))
            assert list(out.tokens)


# -- no secret in logs -----------------------------------------------------------------------
def test_no_key_in_the_logs(server: RestServer, doors: dict[str, str],
                            envoy: EnvoyProcess) -> None:
    for base in doors.values():
        for key in (KEY, BAD, None):
            call(base, "POST", "/completion", {"prompt": "a", "n_predict": 1},
                 headers_for(key))
            call(base, "GET", "/slots", None, headers_for(key, "x-api-key"))
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = service_pb2_grpc.LlamaServerStub(channel)
        for key in (KEY, BAD):
            with contextlib.suppress(grpc.RpcError):
                stub.Tokenize(tokenize_pb2.TokenizeRequest(content="a"), timeout=30,
                              metadata=(("authorization", f"Bearer {key}"),))
    log = server.output()  # the service and its bridge child, at -v (access log on)
    assert "/completion" in log  # the requests were logged, without their keys
    for secret in (KEY, BAD):
        assert secret not in log
        assert secret not in envoy.log()
