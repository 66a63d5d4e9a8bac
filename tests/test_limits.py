"""Request limits (issue 22, item 4; service/limits.py): each flag's default, its bounds, and a
real server started with small limits refusing each one over it, with 413 or 400 in
llama-server's shape through the REST bridge and INVALID_ARGUMENT over gRPC, while a request
just within every limit is served."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from fuzz_rest_checks import answer_problem
from grpc_harness import completion_request
from llama.v1 import service_pb2_grpc, tokenize_pb2
from rest.rest_harness import RestServer

from service import limits
from service.cli_flags import ConfigError
from service.config import load_config

SMALL = {"--max-body-bytes": 4000, "--max-prompt-bytes": 100, "--max-n-probs": 5,
         "--max-stop-strings": 2, "--max-grammar-bytes": 200, "--max-grammar-depth": 3,
         "--max-schema-depth": 2}


def test_defaults() -> None:
    config = load_config(["-m", "x.gguf"], {})
    assert config.limits == limits.RequestLimits()
    assert config.limits.max_body_bytes == 64 << 20
    assert config.limits.max_n_probs == 100 and config.limits.max_stop_strings == 64
    assert config.limits.max_grammar_depth == 1_000 and config.limits.max_schema_depth == 64


def test_flags_and_environment() -> None:
    argv = ["-m", "x.gguf"] + [str(x) for kv in SMALL.items() for x in kv]
    assert load_config(argv, {}).limits.max_stop_strings == 2
    env = {"LLAMA_ARG_MAX_PROMPT_BYTES": "77"}
    assert load_config(["-m", "x.gguf"], env).limits.max_prompt_bytes == 77


@pytest.mark.parametrize("flag", ["--max-grammar-depth=1001", "--max-schema-depth=65",
                                  "--max-n-probs=101", "--max-body-bytes=0",
                                  "--max-grammar-bytes=2000000"])
def test_ceilings_cannot_be_raised(flag: str) -> None:
    """The grammar and schema ceilings keep libllama within its stack: lower only."""
    with pytest.raises(ConfigError):
        load_config(["-m", "x.gguf", flag], {})


@pytest.fixture(scope="module")
def small(tiny_bpe_path: Path) -> Iterator[RestServer]:
    flags = [str(x) for kv in SMALL.items() for x in kv]
    server = RestServer(tiny_bpe_path, *flags, ctx=512, parallel=2)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def _refused(r: httpx.Response, status: int, words: str) -> None:
    assert r.status_code == status, r.text
    assert answer_problem(r.status_code, r.content, r.headers["content-type"]) is None
    assert words in r.json()["error"]["message"], r.text


def _nested_grammar(depth: int) -> str:
    return 'root ::= ' + "(" * depth + '"a"' + ")" * depth


def _nested_schema(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


@pytest.mark.slow
def test_within_every_limit_is_served(small: RestServer) -> None:
    body = {"prompt": "x" * 100, "n_predict": 2, "n_probs": 5, "stop": ["a", "b"],
            "grammar": _nested_grammar(3) + " [a-z]*", "n_cmpl": 2}
    with httpx.Client(base_url=small.url, timeout=60) as http:
        assert http.post("/completion", json=body).status_code == 200
        schema = {"prompt": "x", "n_predict": 2, "json_schema": _nested_schema(1)}
        assert http.post("/completion", json=schema).status_code == 200


@pytest.mark.slow
@pytest.mark.parametrize(("body", "words"), [
    ({"prompt": "x" * 101}, "--max-prompt-bytes"),
    ({"prompt": ["x" * 60, 5, "y" * 60]}, "--max-prompt-bytes"),  # one prompt, two texts
    ({"prompt": "é" * 51}, "--max-prompt-bytes"),  # UTF-8 bytes, not characters
    ({"prompt": "x", "n_probs": 6}, "--max-n-probs"),
    ({"prompt": "x", "stop": ["a", "b", "c"]}, "--max-stop-strings"),
    ({"prompt": "x", "grammar": 'root ::= "' + "a" * 200 + '"'}, "the limit is 200"),
    ({"prompt": "x", "grammar": _nested_grammar(4)}, "the limit is 3"),
    ({"prompt": "x", "json_schema": _nested_schema(3)}, "more than 2 levels"),
    ({"prompt": "x", "n_cmpl": 3}, "--parallel"),
])
def test_over_a_limit_is_400(small: RestServer, body: dict[str, Any], words: str) -> None:
    with httpx.Client(base_url=small.url, timeout=60) as http:
        _refused(http.post("/completion", json=body), 400, words)


@pytest.mark.slow
def test_tokenize_and_chat_meet_the_prompt_limit(small: RestServer) -> None:
    with httpx.Client(base_url=small.url, timeout=60) as http:
        _refused(http.post("/tokenize", json={"content": "x" * 101}), 400, "--max-prompt-bytes")
        chat = {"messages": [{"role": "user", "content": "x" * 200}], "max_tokens": 1}
        _refused(http.post("/v1/chat/completions", json=chat), 400, "--max-prompt-bytes")


@pytest.mark.slow
def test_body_over_the_limit_is_413(small: RestServer) -> None:
    big = b'{"prompt": "' + b"x" * 5000 + b'"}'

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted while read
        yield big[:3000]
        yield big[3000:]

    with httpx.Client(base_url=small.url, timeout=60) as http:
        _refused(http.post("/completion", content=big), 413, "--max-body-bytes")
        _refused(http.post("/tokenize", content=chunked()), 413, "--max-body-bytes")
        _refused(http.post("/v1/chat/completions", content=big), 413, "--max-body-bytes")
        assert http.get("/health").status_code == 200


@pytest.mark.slow
def test_grpc_meets_the_same_limits(small: RestServer) -> None:
    with grpc.insecure_channel(small.grpc_target) as channel:
        stub = service_pb2_grpc.LlamaServerStub(channel)
        for req in (completion_request(prompt="x" * 101), completion_request(prompt="x",
                                                                             n_probs=6)):
            with pytest.raises(grpc.RpcError) as err:
                list(stub.Completion(req, timeout=60))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as err:
            stub.Tokenize(tokenize_pb2.TokenizeRequest(content="x" * 101), timeout=60)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_prompt_limit_counts_utf8_bytes() -> None:
    """The check alone (also on infill's, rerank's and embeddings' texts, which this module's
    server, without FIM tokens, --reranking or --embeddings, answers 501 before reading)."""
    saved = limits.current()
    limits.configure(limits.RequestLimits(max_prompt_bytes=4))
    try:
        limits.check_prompt_text("éé")
        limits.check_prompt_text(b"abcd")
        for text in ("ééé", "abcde", b"abcde"):
            with pytest.raises(ValueError, match="--max-prompt-bytes"):
                limits.check_prompt_text(text)
    finally:
        limits.configure(saved)
