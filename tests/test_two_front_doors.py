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
from rest.rest_harness import API_KEY, RestServer

from native.testmodels import ensure_model

pytestmark = pytest.mark.slow

TIMEOUT = httpx.Timeout(60.0, connect=5.0)
# Values that differ between two identical requests; masked wherever the key appears.
VOLATILE = ("id", "created", "prompt_ms", "prompt_per_token_ms", "prompt_per_second",
            "predicted_ms", "predicted_per_token_ms", "predicted_per_second", "time_ms",
            "cache_n", "tokens_cached", "cached_tokens", "id_slot", "cache")
_VOLATILE_RE = re.compile(rb'"(' + b"|".join(k.encode() for k in VOLATILE)
                          + rb')":(-?[0-9][0-9.eE+-]*|"[^"]*"|null)')
# Headers whose value must be the same at both doors (x-request-id: present at both or none).
SAME_HEADERS = ("content-type", "cache-control", "retry-after")


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


def _doors(server: RestServer, tmp: Path) -> Iterator[Doors]:
    try:
        server.wait_ready()
        with EnvoyProcess.start([server.grpc_target], tmp) as envoy:
            yield Doors(server.url, envoy.base_url)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def doors(tiny_bpe_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Doors]:
    yield from _doors(RestServer(tiny_bpe_path, ctx=2048, parallel=2),
                      tmp_path_factory.mktemp("envoy"))


@pytest.fixture(scope="module")
def keyed(tiny_bpe_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Doors]:
    yield from _doors(RestServer(tiny_bpe_path, "--api-key", API_KEY, ctx=1024, parallel=1),
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
]


@pytest.mark.parametrize(("method", "path", "body"), UNARY)
def test_unary(doors: Doors, method: str, path: str, body: Any) -> None:
    assert same(doors, method, path, body).status == 200


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
