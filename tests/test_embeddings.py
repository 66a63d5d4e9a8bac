"""Embeddings on the real all-MiniLM-L6-v2 (mean pooling, `--embedding`): every input shape of
/embedding(s) and /v1/embeddings over gRPC and the REST bridge, against the sentence-transformers
reference (tests/data/) and llama.cpp run in this process; batching within and across
requests; llama-server's refusals and our own limits."""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from embeddings_harness import (
    EmbedServer,
    cosine,
    embed_server,
    l2,
    max_abs_diff,
    reference_outputs,
)
from google.protobuf import json_format
from llama.v1 import completion_pb2, embedding_pb2, server_pb2

import native

REFERENCE = Path(__file__).parent / "data" / "minilm_reference.json"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sentences() -> list[dict[str, Any]]:
    data = json.loads(REFERENCE.read_text(encoding="utf-8"))
    return data["sentences"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def server(minilm_path: Path) -> Iterator[EmbedServer]:
    with embed_server(minilm_path, "--embedding") as srv:
        yield srv


def embed_request(**body: Any) -> Any:
    return json_format.ParseDict(body, embedding_pb2.EmbedRequest())


# -- the reference ----------------------------------------------------------------------------
def test_grpc_openai_embeddings_match_the_reference(server: EmbedServer,
                                                    sentences: list[dict[str, Any]]) -> None:
    resp = server.stub.OpenAIEmbed(embed_request(input=[s["text"] for s in sentences]),
                                   timeout=60)
    assert resp.object == "list" and resp.model and len(resp.data) == len(sentences)
    for i, (s, d) in enumerate(zip(sentences, resp.data, strict=True)):
        assert d.index == i and d.object == "embedding" and len(d.embedding) == 384
        assert cosine(d.embedding, s["embedding"]) >= 0.9999, s["text"]
        assert l2(d.embedding) == pytest.approx(1.0, abs=1e-5)
    n_tokens = sum(len(s["token_ids"]) for s in sentences)
    assert resp.usage.prompt_tokens == resp.usage.total_tokens == n_tokens


def test_bridge_openai_embeddings_match_the_reference_in_llama_servers_shape(
        server: EmbedServer, sentences: list[dict[str, Any]]) -> None:
    r = server.post("/v1/embeddings", {"input": [s["text"] for s in sentences],
                                       "model": "mine"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert list(body) == ["model", "object", "usage", "data"]
    assert body["model"] == "mine" and body["object"] == "list"
    for i, (s, d) in enumerate(zip(sentences, body["data"], strict=True)):
        assert list(d) == ["embedding", "index", "object"]
        assert d["index"] == i and d["object"] == "embedding"
        assert cosine(d["embedding"], s["embedding"]) >= 0.9999, s["text"]


def test_base64_is_the_float32_vector(server: EmbedServer) -> None:
    floats = server.post("/v1/embeddings", {"input": "a cat"}).json()["data"][0]
    b64 = server.post("/v1/embeddings", {"input": "a cat", "encoding_format": "base64"})
    item = b64.json()["data"][0]
    assert list(item) == ["embedding", "index", "object", "encoding_format"]
    assert item["encoding_format"] == "base64"
    raw = base64.b64decode(item["embedding"])
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == floats["embedding"]


def test_native_endpoints_take_every_input_shape(server: EmbedServer) -> None:
    vocab_ids = server.post("/tokenize", {"content": "a cat", "add_special": True}).json()
    ids = vocab_ids["tokens"]
    one = server.post("/embedding", {"content": "a cat"})
    assert one.status_code == 200, one.text
    [result] = one.json()
    assert list(result) == ["index", "embedding"] and result["index"] == 0
    [vector] = result["embedding"]  # pooled: one vector
    for content in (ids, ["a cat"], [ids], [ids[:1], *[["a cat"]]]):
        got = server.post("/embeddings", {"content": content}).json()
        assert max_abs_diff(got[-1]["embedding"][0], vector) < 1e-5, content
    mixed = server.post("/embeddings", {"content": [ids[0], "a cat", ids[-1]]}).json()
    assert len(mixed) == 1  # token ids mixed with text: one input
    # `content` on the OpenAI path answers the native shape, as llama-server does.
    native_shape = server.post("/v1/embeddings", {"content": "a cat"}).json()
    assert native_shape[0]["embedding"][0] == vector


def test_grpc_typed_input_and_native_results(server: EmbedServer) -> None:
    req = embedding_pb2.EmbedRequest()
    req.typed_input.prompts.add().pieces.add().text = "a dog"
    piece = req.typed_input.prompts.add().pieces.add()
    piece.tokens.ids.extend([101, 3899, 102])
    resp = server.stub.Embed(req, timeout=60)
    assert [r.index for r in resp.results] == [0, 1]
    assert [r.tokens_evaluated for r in resp.results] == [4, 3]
    assert all(len(r.embedding) == 1 and len(r.embedding[0].values) == 384
               for r in resp.results)


def test_vectors_equal_llama_cpp_alone_and_normalizations(server: EmbedServer,
                                                          minilm_path: Path) -> None:
    model = native.Model(minilm_path)
    tokens = model.vocab.tokenize("Embeddings are vectors.", add_special=True)
    model.close()
    [want] = reference_outputs(minilm_path, tokens, "mean")
    for norm, scale in ((-1, 1.0), (2, l2(want)), (1, sum(map(abs, want))),
                        (0, max(map(abs, want)) / 32760.0)):
        body = server.post("/embedding", {"content": tokens, "embd_normalize": norm}).json()
        got = body[0]["embedding"][0]
        assert max_abs_diff(got, [x / scale for x in want]) < 1e-4 * max(1.0, 1 / scale), norm
    p3 = server.post("/embedding", {"content": tokens, "embd_normalize": 3}).json()
    assert sum(abs(x) ** 3 for x in p3[0]["embedding"][0]) == pytest.approx(1.0, rel=1e-4)


# -- batching ---------------------------------------------------------------------------------
def test_64_inputs_in_one_request_equal_each_alone(server: EmbedServer) -> None:
    texts = [f"sentence number {i} about {'cats' if i % 2 else 'the sea'}" for i in range(64)]
    together = server.post("/v1/embeddings", {"input": texts}).json()["data"]
    assert [d["index"] for d in together] == list(range(64))
    for i in (0, 17, 63):
        alone = server.post("/v1/embeddings", {"input": texts[i]}).json()["data"][0]
        assert max_abs_diff(together[i]["embedding"], alone["embedding"]) < 1e-4


def test_concurrent_requests_each_get_their_own_vectors(server: EmbedServer) -> None:
    texts = [f"request {i}: {'red' if i % 3 else 'blue'} things" for i in range(32)]
    alone = {t: server.post("/v1/embeddings", {"input": t}).json()["data"][0]["embedding"]
             for t in texts}

    def grpc_call(t: str) -> list[float]:
        return list(server.stub.OpenAIEmbed(embed_request(input=t), timeout=60).data[0]
                    .embedding)

    with ThreadPoolExecutor(32) as pool:
        got = list(pool.map(grpc_call, texts))
    for t, g in zip(texts, got, strict=True):
        assert max_abs_diff(g, alone[t]) < 1e-4, t


def test_decodes_flag_every_token_as_an_output(server: EmbedServer) -> None:
    """llama.cpp outputs every token of an embeddings context's batch, and warns (through the
    log callback, into Python, in the middle of the decode) on each decode whose batch says
    otherwise; the engine flags them all, as llama-server does."""
    assert server.post("/v1/embeddings", {"input": ["one more", "and another"]}).status_code \
        == 200
    assert "not marked as outputs" not in server.svc.log()


# -- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize(("body", "message"), [
    ({"input": []}, '"input" must not be empty'),
    ({"input": [[]]}, "Input content cannot be empty"),
    ({"input": [5, 1_000_000]}, "outside the vocabulary"),
    ({"input": ["x"] * 10_000}, "at most 2048"),
    ({"input": "x", "encoding_format": "hex"}, "Can be either float or base64"),
    ({"model": "m"}, '"input" or "content" must be provided'),
    ({"input": "word " * 600}, "--ubatch-size"),
    ({"input": "x", "embd_normalize": -2}, "embd_normalize must be -1"),
    ({"input": [-1]}, "outside the vocabulary"),
    ({"input": 7}, "\"input\" must be a string"),
])
def test_bad_input_is_a_400_and_the_server_serves_on(server: EmbedServer, body: dict[str, Any],
                                                     message: str) -> None:
    r = server.post("/v1/embeddings", body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and message in error["message"]
    with pytest.raises(grpc.RpcError) as e:
        server.stub.OpenAIEmbed(embed_request(**body), timeout=60)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in e.value.details()
    assert server.post("/v1/embeddings", {"input": "still fine"}).status_code == 200


def test_an_empty_string_embeds_cls_and_sep_as_llama_server_does(server: EmbedServer) -> None:
    r = server.post("/embedding", {"content": ""})
    assert r.status_code == 200, r.text
    assert len(r.json()[0]["embedding"][0]) == 384


def test_embedding_server_refuses_generation_and_reranking(server: EmbedServer) -> None:
    r = server.post("/completion", {"prompt": "hi", "n_predict": 2})
    assert r.status_code == 501
    assert r.json()["error"]["message"] == ("This server does not support completions. Start "
                                            "it without `--embeddings`")
    with pytest.raises(grpc.RpcError) as e:
        list(server.stub.Completion(completion_pb2.CompletionRequest(), timeout=30))
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    rr = server.post("/rerank", {"query": "q", "documents": ["d"]})
    assert rr.status_code == 501
    assert "Start it with `--reranking`" in rr.json()["error"]["message"]


def test_a_generation_server_refuses_embeddings(grpc_service: Any) -> None:
    stub = grpc_service.stub()
    with pytest.raises(grpc.RpcError) as e:
        stub.OpenAIEmbed(embed_request(input="x"), timeout=30)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert e.value.details() == ("This server does not support embeddings. Start it with "
                                 "`--embeddings`")



def test_a_request_that_goes_away_leaves_nothing_queued(server: EmbedServer) -> None:
    with pytest.raises(grpc.RpcError) as e:
        server.stub.OpenAIEmbed(embed_request(input=[f"input {i}" for i in range(2000)]),
                                timeout=0.3)
    assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    load = None
    for _ in range(200):  # the cancellation reaches the engine within a decode or two
        load = server.stub.GetLoad(server_pb2.GetLoadRequest(), timeout=10)
        if load.n_processing == 0 and load.n_waiting == 0:
            break
        time.sleep(0.05)
    assert load is not None and load.n_processing == load.n_waiting == 0
    assert server.post("/v1/embeddings", {"input": "after"}).status_code == 200


def test_the_embedding_server_process_never_loads_numpy(server: EmbedServer) -> None:
    # numpy in the process makes libllama's CPU matrix kernels ~3% slower (docs/benchmarks.md):
    # vectors are float32 arrays normalized in C (service/embedding_vectors.py). Every way in
    # runs first: pooled vectors through gRPC (float and base64), native results, the bridge.
    req = embedding_pb2.EmbedRequest(encoding_format="base64")
    req.input.list_value.extend(["a panda", "bamboo"])
    assert len(server.stub.OpenAIEmbed(req, timeout=60).data) == 2
    req = embedding_pb2.EmbedRequest()
    req.content.string_value = "a panda"
    assert len(server.stub.Embed(req, timeout=60).results) == 1
    assert server.post("/v1/embeddings", {"input": ["a", "b"]}).status_code == 200
    maps = Path(f"/proc/{server.svc.proc.pid}/maps").read_text()
    assert "libllama" in maps and "numpy" not in maps
