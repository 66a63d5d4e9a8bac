"""One REST suite, two front doors: every request goes to the REST bridge and to Envoy
(grpc_json_transcoder over llama.v1.LlamaServerHttp) in front of the same service, and the two
answers must be the same bytes: status, content type, the headers that matter, the body, SSE
framing. Values that change from one call to the next (ids, `created`, timings, what the cache
held) are masked in both bodies before the comparison; keys, order and formatting are not.

The openai SDK runs against both doors too: completions and chat, streaming and not."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from embeddings_harness import embed_server
from envoy_harness import EnvoyProcess
from rest.rest_harness import API_KEY, RestServer, wait_http

from native.testmodels import ensure_model

pytestmark = pytest.mark.slow

TIMEOUT = httpx.Timeout(60.0, connect=5.0)
# Values that differ between two identical requests; masked wherever the key appears.
VOLATILE = ("id", "created", "prompt_ms", "prompt_per_token_ms", "prompt_per_second",
            "predicted_ms", "predicted_per_token_ms", "predicted_per_second", "time_ms",
            "cache_n", "tokens_cached", "cached_tokens", "id_slot", "cache", "save_ms",
            "restore_ms")
_VOLATILE_RE = re.compile(rb'"(' + b"|".join(k.encode() for k in VOLATILE)
                          + rb')":(-?[0-9][0-9.eE+-]*|"[^"]*"|null)')
# Headers whose value must be the same at both doors (x-request-id: present at both or none).
SAME_HEADERS = ("content-type", "cache-control", "retry-after", "vary", "allow",
                "access-control-allow-origin", "access-control-allow-credentials",
                "access-control-allow-methods", "access-control-allow-headers",
                "access-control-max-age")


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @classmethod
    def of(cls, r: httpx.Response) -> Answer:
        headers = {k: r.headers[k] for k in SAME_HEADERS if k in r.headers}
        if "x-request-id" in r.headers:
            headers["x-request-id"] = "*"
        return cls(r.status_code, headers, _VOLATILE_RE.sub(rb'"\1":*', r.content))


@dataclass(frozen=True)
class Doors:
    bridge: str
    envoy: str

    def both(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[Answer, Answer]:
        answers = []
        for base in (self.bridge, self.envoy):
            content = raw if raw is not None else (
                None if body is None else json.dumps(body).encode())
            hdrs = {"content-type": "application/json", **(headers or {})}
            with httpx.Client(base_url=base, timeout=TIMEOUT) as client:
                answers.append(Answer.of(client.request(method, path, content=content,
                                                        headers=hdrs)))
        return answers[0], answers[1]


class PrefixedServer(RestServer):
    def wait_ready(self, timeout: float = 90.0) -> None:
        wait_http(self, self.url + PREFIX + "/health", {200}, timeout)


def _doors(server: RestServer, tmp: Path, *render_args: str) -> Iterator[Doors]:
    try:
        server.wait_ready()
        with EnvoyProcess.start([server.grpc_target], tmp, *render_args) as envoy:
            yield Doors(server.url, envoy.base_url)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def doors(tiny_bpe_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Doors]:
    # --no-webui: /props' `ui` is then false at both doors (Envoy serves no web page)
    slot_dir = tmp_path_factory.mktemp("slot-files")
    yield from _doors(RestServer(tiny_bpe_path, "--no-webui", "--slot-save-path", str(slot_dir),
                                 ctx=2048, parallel=2),
                      tmp_path_factory.mktemp("envoy"))


@pytest.fixture(scope="module")
def prefixed(tiny_bpe_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Doors]:
    server = PrefixedServer(tiny_bpe_path, "--api-prefix", PREFIX, ctx=1024, parallel=1)
    yield from _doors(server, tmp_path_factory.mktemp("envoy-prefixed"), "--api-prefix", PREFIX)


@pytest.fixture(scope="module")
def keyed(tiny_bpe_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Doors]:
    yield from _doors(RestServer(tiny_bpe_path, "--api-key", API_KEY, "--metrics", "--props",
                                 "--no-webui",
                                 ctx=1024, parallel=1),
                      tmp_path_factory.mktemp("envoy-keyed"))


def same(doors: Doors, method: str, path: str, body: Any = None, **kw: Any) -> Answer:
    bridge, envoy = doors.both(method, path, body, **kw)
    assert envoy == bridge, f"{method} {path}: bridge {bridge}\n  envoy {envoy}"
    return bridge


# No cache reuse: the second door would find the first one's prompt cached (prompt_n).
GREEDY = {"temperature": 0, "seed": 7, "cache_prompt": False}
CHAT: list[Any] = [{"role": "system", "content": "Be brief."},
                   {"role": "user", "content": "Hello!"}]

GENERATION = [
    ("/completion", {"prompt": "The sky is", "n_predict": 6}),
    ("/completions", {"prompt": "The sky is", "n_predict": 4, "return_tokens": True}),
    ("/completion", {"prompt": ["One", "Two"], "n_predict": 3}),
    ("/completion", {"prompt": "Hi", "n_predict": 3, "n_probs": 2}),
    ("/completion", {"prompt": "Hi", "n_predict": 3, "response_fields": ["content", "stop"]}),
    ("/infill", {"input_prefix": "def f(", "input_suffix": "):", "n_predict": 3}),
    ("/v1/completions", {"prompt": "Once upon", "max_tokens": 5}),
    ("/v1/completions", {"prompt": "Once upon", "max_tokens": 3, "logprobs": 2}),
    ("/v1/chat/completions", {"messages": CHAT, "max_tokens": 5}),
    ("/chat/completions", {"messages": CHAT, "max_tokens": 3, "n": 2}),
    ("/v1/chat/completions", {"messages": CHAT, "max_tokens": 3,
                              "stream_options": {"include_usage": True}}),
]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(("path", "body"), GENERATION)
def test_generation(doors: Doors, path: str, body: dict[str, Any], stream: bool) -> None:
    answer = same(doors, "POST", path, {**body, **GREEDY, "stream": stream})
    if answer.status == 200:
        expected = "text/event-stream" if stream else "application/json"
        assert answer.headers["content-type"].startswith(expected)
        if stream:
            assert answer.body.endswith(b"\n\n")
            assert (answer.body.endswith(b"data: [DONE]\n\n")) == path.startswith(("/v1", "/chat"))


UNARY = [
    ("POST", "/tokenize", {"content": "Hello world"}),
    ("POST", "/tokenize", {"content": "Hello world", "with_pieces": True}),
    ("POST", "/tokenize", {"content": "<|begin_of_text|>x", "add_special": True,
                           "parse_special": True}),
    ("POST", "/detokenize", {"tokens": [6151, 1917]}),
    ("POST", "/apply-template", {"messages": CHAT}),
    ("GET", "/v1/models", None),
    ("GET", "/models", None),
    ("GET", "/load", None),
    ("GET", "/server-info", None),
    ("GET", "/lora-adapters", None),
    ("POST", "/lora-adapters", []),
    ("POST", "/cancel", {"id": "cmpl-none"}),
    ("POST", "/v1/chat/completions/control", {"id": "chatcmpl-none",
                                              "action": "reasoning_end"}),
    ("GET", "/props", None),
    ("GET", "/slots", None),
    ("GET", "/slots?fail_on_no_slot=1", None),
]


@pytest.mark.parametrize(("method", "path", "body"), UNARY)
def test_unary(doors: Doors, method: str, path: str, body: Any) -> None:
    answer = same(doors, method, path, body)
    assert answer.status == 200, answer


def test_a_large_body(doors: Doors) -> None:
    """A few MiB in one request (Envoy's default transcoder buffer would refuse it: 413)."""
    answer = same(doors, "POST", "/tokenize", {"content": "hello world " * 300_000})
    assert answer.status == 200 and len(answer.body) > 1 << 20


ERRORS: list[tuple[str, str, Any, bytes | None]] = [
    ("POST", "/completion", {"prompt": "x", "temperature": "hot"}, None),
    ("POST", "/completion", None, b"[1"),
    ("POST", "/completion", None, b"[1, 2]"),
    ("POST", "/completion", None, b"[" * 600 + b"]" * 600),
    ("POST", "/completion", {"prompt": "x", "n_probs": -5, "stream": True}, None),
    ("POST", "/completion", {"prompt": "x", "n_predict": 2, "stream": True,
                             "dry_sequence_breakers": []}, None),
    ("POST", "/v1/chat/completions", {"messages": []}, None),
    ("POST", "/v1/chat/completions", {"messages": CHAT, "n": 9}, None),
    ("POST", "/v1/chat/completions", {"messages": CHAT, "stream": True,
                                      "response_format": {"type": "nope"}}, None),
    ("POST", "/infill", {"input_extra": [{"filename": "a"}]}, None),
    ("POST", "/tokenize", {"content": 5}, None),
    ("POST", "/detokenize", {"tokens": [10 ** 9]}, None),
    ("POST", "/apply-template", {"messages": "no"}, None),
    ("GET", "/completion", None, None),  # 405 with Allow
    ("GET", "/v1/chat/completions", None, None),
    ("DELETE", "/props", None, None),
    ("PUT", "/lora-adapters", None, None),
    ("GET", "/slots/0", None, None),
    ("GET", "/slots/import", None, None),
    ("POST", "/slots/0/export", None, None),
    ("PATCH", "/health", None, None),
    ("POST", "/completion/", {"prompt": "a"}, None),  # no route: 404
    ("GET", "/v1/models/", None, None),
    ("GET", "/metrics", None, None),  # not enabled (--metrics)
    ("POST", "/props", {"n_ctx": 1}, None),  # not enabled (--props)
    ("POST", "/lora-adapters", {"id": 0}, None),
    ("POST", "/lora-adapters", [{"id": 7, "scale": 1.0}], None),
    ("POST", "/cancel", {"id": 5}, None),
    ("POST", "/v1/chat/completions/control", {"action": "reasoning_end"}, None),
]


@pytest.mark.parametrize(("method", "path", "body", "raw"), ERRORS)
def test_errors(doors: Doors, method: str, path: str, body: Any, raw: bytes | None) -> None:
    answer = same(doors, method, path, body, raw=raw)
    assert answer.status >= 400
    assert json.loads(answer.body)["error"]["code"] == answer.status


@pytest.mark.parametrize("headers", [
    {}, {"authorization": "Bearer wrong"}, {"authorization": f"Bearer {API_KEY}"},
    {"x-api-key": API_KEY}, {"authorization": API_KEY}])
@pytest.mark.parametrize(("path", "body"), [
    ("/completion", {"prompt": "Hi", "n_predict": 2, **GREEDY}),
    ("/v1/chat/completions", {"messages": CHAT, "max_tokens": 2, "stream": True, **GREEDY}),
    ("/tokenize", {"content": "Hi"})])
def test_api_key(keyed: Doors, path: str, body: Any, headers: dict[str, str]) -> None:
    answer = same(keyed, "POST", path, body, headers=headers)
    assert (answer.status == 200) == (API_KEY in "".join(headers.values()))


# -- slot files and KV snapshots -----------------------------------------------------------------
def _json(answer: Answer) -> Any:
    """A masked body as JSON: a masked value reads as null."""
    return json.loads(answer.body.replace(b'":*', b'":null'))


def _fill_slot(doors: Doors, id_slot: int) -> None:
    body = {"prompt": "Slots keep their cache", "n_predict": 3, "id_slot": id_slot,
            "temperature": 0, "seed": 7}
    assert httpx.post(doors.bridge + "/completion", json=body, timeout=TIMEOUT).status_code == 200


SLOT_ERRORS: list[tuple[str, str, Any, bytes | None]] = [
    ("POST", "/slots/abc?action=erase", None, None),
    ("POST", "/slots/1.5?action=erase", None, None),
    ("POST", "/slots/2147483648?action=erase", None, None),
    ("POST", "/slots/-2147483649?action=erase", None, None),
    ("POST", "/slots/9?action=erase", None, None),
    ("POST", "/slots/0?action=nope", None, None),
    ("POST", "/slots/0", None, None),
    ("POST", "/slots/0?action=save", {"filename": "../x.bin"}, None),
    ("POST", "/slots/0?action=save", {"filename": 5}, None),
    ("POST", "/slots/0?action=save", [], None),
    ("POST", "/slots/0?action=save", None, b"{1"),
    ("POST", "/slots/0?action=restore", {"filename": "missing.bin"}, None),
    ("GET", "/slots/abc/export", None, None),
    ("GET", "/slots/10000000000000000000/export", None, None),
    ("GET", "/slots/9/export", None, None),
    ("POST", "/slots/import?id_slot=x", None, b"bytes"),
    ("POST", "/slots/import?id_slot=", None, b"bytes"),
    ("POST", "/slots/import?id_slot=99999999999", None, b"bytes"),
    ("POST", "/slots/import?id_slot=9", None, b"bytes"),
    ("POST", "/slots/import?id_slot=0", None, b""),
    ("POST", "/slots/import", None, b"not a snapshot"),
    # several MiB: Envoy streams it in as several messages; refused for what it is
    ("POST", "/slots/import?id_slot=1", None, b"\0" * (5 << 20)),
]


@pytest.mark.parametrize(("method", "path", "body", "raw"), SLOT_ERRORS)
def test_slot_errors(doors: Doors, method: str, path: str, body: Any,
                     raw: bytes | None) -> None:
    answer = same(doors, method, path, body, raw=raw)
    assert answer.status >= 400
    assert json.loads(answer.body)["error"]["code"] == answer.status


def test_slot_actions(doors: Doors) -> None:
    """Save, restore, erase: the same JSON at both doors (each door's request runs in turn)."""
    _fill_slot(doors, 0)
    saved = same(doors, "POST", "/slots/0?action=save", {"filename": "doors.bin"})
    assert saved.status == 200 and _json(saved)["n_saved"] > 0
    restored = same(doors, "POST", "/slots/1?action=restore", {"filename": "doors.bin"})
    assert restored.status == 200
    assert _json(restored)["n_restored"] == _json(saved)["n_saved"]
    erased = []
    for base in (doors.bridge, doors.envoy):  # each door erases what it restored
        with httpx.Client(base_url=base, timeout=TIMEOUT) as client:
            assert client.post("/slots/1?action=restore",
                               json={"filename": "doors.bin"}).status_code == 200
            erased.append(Answer.of(client.post("/slots/1?action=erase")))
    assert erased[1] == erased[0] and erased[0].status == 200
    assert _json(erased[0])["n_erased"] == _json(saved)["n_saved"]


def test_slot_snapshot_export_and_import(doors: Doors) -> None:
    """GET /slots/{id}/export: the same bytes and headers (its length included) at both doors;
    POST /slots/import of those bytes: the same answer."""
    _fill_slot(doors, 0)
    answers = [httpx.get(base + "/slots/0/export", timeout=TIMEOUT)
               for base in (doors.bridge, doors.envoy)]
    assert [r.status_code for r in answers] == [200, 200]
    snapshot = answers[0].content
    assert answers[1].content == snapshot and len(snapshot) > 0
    names = ("content-type", "content-length", "content-disposition")
    assert [{k: r.headers.get(k) for k in names} for r in answers] == [{
        "content-type": "application/octet-stream", "content-length": str(len(snapshot)),
        "content-disposition": 'attachment; filename="slot-0.bin"'}] * 2
    imported = same(doors, "POST", "/slots/import?id_slot=1", raw=snapshot,
                    headers={"content-type": "application/octet-stream"})
    assert imported.status == 200
    assert _json(imported)["n_read"] == len(snapshot)


def test_slot_routes_need_the_key(keyed: Doors) -> None:
    auth = {"authorization": f"Bearer {API_KEY}"}
    for headers in ({}, auth):  # with the key: this server has no --slot-save-path
        assert same(keyed, "POST", "/slots/0?action=erase", headers=headers).status \
            == (401 if not headers else 501)
        assert same(keyed, "GET", "/slots/abc/export", headers=headers).status \
            == (401 if not headers else 400)
        assert same(keyed, "POST", "/slots/import?id_slot=0", raw=b"x",
                    headers=headers).status == (401 if not headers else 400)


# -- CORS, the API prefix ----------------------------------------------------------------------
ORIGIN = {"origin": "http://example.com"}
PREFIX = "/llama"


@pytest.mark.parametrize(("method", "path", "body", "headers"), [
    ("POST", "/tokenize", {"content": "a"}, ORIGIN),
    ("POST", "/completion", {"prompt": "a", "n_predict": 1, **GREEDY}, ORIGIN),
    ("POST", "/v1/chat/completions", {"messages": CHAT, "max_tokens": 1, "stream": True,
                                      **GREEDY}, ORIGIN),
    ("POST", "/completion", {"prompt": "a", "n_probs": -1}, ORIGIN),
    ("GET", "/no/such/path", None, ORIGIN),
    ("GET", "/health", None, ORIGIN),
    ("GET", "/health", None, {}),
    ("OPTIONS", "/v1/chat/completions", None, {
        **ORIGIN, "access-control-request-method": "POST",
        "access-control-request-headers": "content-type,authorization"}),
    ("OPTIONS", "/completion", None, {**ORIGIN, "access-control-request-method": "PUT"}),
])
def test_cors(doors: Doors, method: str, path: str, body: Any,
              headers: dict[str, str]) -> None:
    answer = same(doors, method, path, body, headers=headers)
    assert answer.headers  # every answer has its content type at least


def test_cors_headers_are_the_bridges(doors: Doors) -> None:
    bridge, envoy = (httpx.options(base + "/completion", headers={
        **ORIGIN, "access-control-request-method": "POST"}) for base in (doors.bridge,
                                                                       doors.envoy))
    names = ("access-control-allow-origin", "access-control-allow-methods",
             "access-control-allow-credentials", "access-control-max-age", "vary")
    assert {k: envoy.headers.get(k) for k in names} == {k: bridge.headers.get(k) for k in names}
    assert bridge.headers["access-control-allow-origin"] == ORIGIN["origin"]
    simple = [httpx.post(base + "/tokenize", json={"content": "a"}, headers=ORIGIN)
              for base in (doors.bridge, doors.envoy)]
    assert [{k: r.headers.get(k) for k in names} for r in simple] == \
        [{k: simple[0].headers.get(k) for k in names}] * 2


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", PREFIX + "/completion", {"prompt": "a", "n_predict": 2, **GREEDY}),
    ("POST", PREFIX + "/v1/chat/completions", {"messages": CHAT, "max_tokens": 2,
                                               "stream": True, **GREEDY}),
    ("POST", PREFIX + "/tokenize", {"content": "a"}),
    ("GET", PREFIX + "/health", None),
    ("POST", "/completion", {"prompt": "a", "n_predict": 2}),
    ("POST", PREFIX + "x/completion", {"prompt": "a", "n_predict": 2}),
])
def test_api_prefix(prefixed: Doors, method: str, path: str, body: Any) -> None:
    answer = same(prefixed, method, path, body)
    assert (answer.status == 200) == path.startswith(PREFIX + "/")


def test_metrics_and_props_when_enabled(keyed: Doors) -> None:
    auth = {"authorization": f"Bearer {API_KEY}"}
    assert same(keyed, "POST", "/props", {}, headers=auth).status == 200
    assert same(keyed, "GET", "/props").status == 200  # public, as in llama-server
    # the counters move between the two requests: status and type compared, not the text
    bridge, envoy = keyed.both("GET", "/metrics", headers=auth)
    assert (envoy.status, envoy.headers) == (bridge.status, bridge.headers)
    assert bridge.status == 200 and b"llamacpp:" in envoy.body


# -- the openai SDK through both doors ------------------------------------------------------
def _sdk(base: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base + "/v1", api_key="none", timeout=60.0, max_retries=0)


def test_openai_sdk_chat(doors: Doors) -> None:
    texts = []
    for base in (doors.bridge, doors.envoy):
        client: Any = _sdk(base)  # the SDK's overloads do not type a stream's chunks
        plain = client.chat.completions.create(model="m", messages=CHAT, max_tokens=6,
                                               temperature=0, seed=7)
        streamed = "".join(chunk.choices[0].delta.content or ""
                           for chunk in client.chat.completions.create(
                               model="m", messages=CHAT, max_tokens=6, temperature=0, seed=7,
                               stream=True) if chunk.choices)
        assert plain.choices[0].message.content == streamed
        texts.append(streamed)
    assert texts[0] == texts[1] and texts[0]


def test_openai_sdk_completions(doors: Doors) -> None:
    texts = []
    for base in (doors.bridge, doors.envoy):
        client = _sdk(base)
        plain = client.completions.create(model="m", prompt="Once upon", max_tokens=6,
                                          temperature=0, seed=7)
        streamed = "".join(c.choices[0].text for c in client.completions.create(
            model="m", prompt="Once upon", max_tokens=6, temperature=0, seed=7, stream=True)
            if c.choices)
        assert plain.choices[0].text == streamed
        texts.append(streamed)
    assert texts[0] == texts[1] and texts[0]


def test_openai_sdk_error(doors: Doors) -> None:
    for base in (doors.bridge, doors.envoy):
        with pytest.raises(openai.BadRequestError) as e:
            _sdk(base).chat.completions.create(model="m", messages=[], max_tokens=2)
        assert e.value.status_code == 400
        assert e.value.body is not None


# -- embeddings and rerank ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def embed_doors(minilm_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Doors]:
    with embed_server(minilm_path, "--embedding", parallel=2) as srv, \
            EnvoyProcess.start([srv.svc.address], tmp_path_factory.mktemp("envoy-emb")) as env:
        yield Doors(srv.url, env.base_url)


@pytest.mark.parametrize(("path", "body"), [
    ("/embedding", {"content": "a red car"}),
    ("/embeddings", {"content": ["a red car", "the sea"]}),
    ("/v1/embeddings", {"input": ["a red car", "the sea"]}),
    ("/v1/embeddings", {"input": "a red car", "encoding_format": "base64"}),
    ("/v1/embeddings", {"content": "a red car"}),
    ("/v1/embeddings", {"input": []}),
    ("/embedding", {"content": 5}),
    ("/rerank", {"query": "x", "documents": ["y"]}),
])
def test_embeddings(embed_doors: Doors, path: str, body: Any) -> None:
    same(embed_doors, "POST", path, body)


def test_rerank(tmp_path: Path) -> None:
    docs = ["pandas eat bamboo", "paris", "a bear from china"]
    with embed_server(ensure_model("minilm-reranker"), "--reranking", parallel=1) as srv, \
            EnvoyProcess.start([srv.svc.address], tmp_path) as envoy:
        doors = Doors(srv.url, envoy.base_url)
        for path in ("/reranking", "/rerank", "/v1/rerank", "/v1/reranking"):
            assert same(doors, "POST", path, {"query": "panda", "documents": docs}).status == 200
        tei = same(doors, "POST", "/rerank", {"query": "panda", "texts": docs,
                                              "return_text": True})
        assert json.loads(tei.body)[0]["text"] in docs
        assert same(doors, "POST", "/rerank", {"query": "panda", "documents": []}).status == 400
