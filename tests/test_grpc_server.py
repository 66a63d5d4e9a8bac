"""The rest of the service over real gRPC: chat (template + OpenAI-shaped stream), ApplyTemplate,
Tokenize/Detokenize, GetProps, ListModels, health while the model loads, API keys, reflection."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_harness import (
    NOT_SERVING,
    SERVING,
    ServiceProcess,
    chat_request,
    complete,
    completion_request,
    running_service,
)
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from llama.v1 import common_pb2, server_pb2, service_pb2_grpc, tokenize_pb2

from service.config import load_config
from service.server import HOLD_LOAD_ENV, start_server

USER_HELLO = [{"role": "user", "content": "Hello there"}]


# -- chat -----------------------------------------------------------------------------------
def test_apply_template_renders_the_models_chat_template(grpc_stub: Any) -> None:
    prompt = grpc_stub.ApplyTemplate(chat_request(messages=USER_HELLO), timeout=10).prompt
    # The template writes BOS, the tokenizer adds it too: the text leaves it out (llama.cpp
    # strips it), so the model sees exactly one.
    assert "<|begin_of_text|>" not in prompt
    tokens = grpc_stub.Tokenize(tokenize_pb2.TokenizeRequest(content=prompt, add_special=True),
                                timeout=10).tokens
    assert list(tokens).count(128000) == 1
    assert "<|start_header_id|>user<|end_header_id|>\n\nHello there<|eot_id|>" in prompt
    assert prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    no_gen = grpc_stub.ApplyTemplate(chat_request(messages=USER_HELLO,
                                                  add_generation_prompt=False), timeout=10)
    assert no_gen.prompt.endswith("Hello there<|eot_id|>")


def test_chat_completion_streams_openai_chunks(grpc_stub: Any) -> None:
    msgs = list(grpc_stub.ChatCompletion(chat_request(
        messages=USER_HELLO, temperature=0.0, max_completion_tokens=8), timeout=60))
    first, last = msgs[0], msgs[-1]
    assert first.id.startswith("chatcmpl-")
    assert all(m.id == first.id and m.object == "chat.completion.chunk" for m in msgs)
    assert first.choices[0].delta.role == "assistant"
    assert not any(m.choices[0].delta.HasField("role") for m in msgs[1:])
    assert last.choices[0].finish_reason == "length"
    assert not any(m.choices[0].HasField("finish_reason") for m in msgs[:-1])
    assert last.usage.completion_tokens == 8
    assert last.usage.total_tokens == 8 + last.usage.prompt_tokens
    assert last.timings.predicted_n == 8
    text = "".join(m.choices[0].delta.content for m in msgs)
    # The same as completing the rendered template: the chat path is template + completion.
    prompt = grpc_stub.ApplyTemplate(chat_request(messages=USER_HELLO), timeout=10).prompt
    ref = complete(grpc_stub, prompt=prompt, n_predict=8, temperature=0.0)
    assert text == ref.content
    assert last.usage.prompt_tokens == ref.final.tokens_evaluated


def test_chat_stops_at_end_of_turn(grpc_stub: Any) -> None:
    msgs = list(grpc_stub.ChatCompletion(chat_request(
        messages=USER_HELLO, temperature=0.0, max_completion_tokens=8,
        logit_bias=[[128009, 100.0]]), timeout=60))
    assert msgs[-1].choices[0].finish_reason == "stop"
    assert msgs[-1].stop_type == "eos"


def test_chat_logprobs(grpc_stub: Any) -> None:
    msgs = list(grpc_stub.ChatCompletion(chat_request(
        messages=USER_HELLO, temperature=0.0, max_completion_tokens=4, logprobs=True,
        top_logprobs=3), timeout=60))
    content = [c for m in msgs for c in m.choices[0].logprobs.content]
    assert len(content) == 4 and all(len(c.top_logprobs) == 3 for c in content)


def test_chat_timings_per_token_reach_every_chunk(grpc_stub: Any) -> None:
    """As llama-server: with timings_per_token each streamed chat chunk has timings."""
    msgs = list(grpc_stub.ChatCompletion(chat_request(
        messages=USER_HELLO, temperature=0.0, max_completion_tokens=4, timings_per_token=True,
        stream=True), timeout=60))
    content = [m for m in msgs if m.choices and m.choices[0].tokens]
    assert content and all(m.HasField("timings") for m in content)
    assert [m.timings.predicted_n for m in content] == list(range(1, len(content) + 1))


# -- tokens ---------------------------------------------------------------------------------
def test_tokenize_detokenize_round_trip(grpc_stub: Any) -> None:
    text = "Hello, wörld! 日本語 🙂 tabs\tand\nnewlines"
    toks = grpc_stub.Tokenize(tokenize_pb2.TokenizeRequest(content=text), timeout=10).tokens
    assert toks and toks[0] != 128000  # add_special defaults to false
    back = grpc_stub.Detokenize(tokenize_pb2.DetokenizeRequest(tokens=toks), timeout=10)
    assert back.content == text


def test_tokenize_options(grpc_stub: Any) -> None:
    def tok(**kw: Any) -> list[int]:
        return list(grpc_stub.Tokenize(tokenize_pb2.TokenizeRequest(**kw), timeout=10).tokens)

    assert tok(content="Hi", add_special=True)[0] == 128000
    assert tok(content="<|eot_id|>") == [128009]  # special tokens parsed by default
    assert len(tok(content="<|eot_id|>", parse_special=False)) > 1
    resp = grpc_stub.Tokenize(tokenize_pb2.TokenizeRequest(content="é日🙂", with_pieces=True),
                              timeout=10)
    joined = b"".join(p.piece.encode() if p.HasField("piece") else p.piece_bytes
                      for p in resp.pieces)
    assert [p.id for p in resp.pieces] == list(resp.tokens)
    assert joined == "é日🙂".encode()


def test_tokenize_content_pieces(grpc_stub: Any) -> None:
    """llama-server's list `content`: BOS only for a first text piece, ids passed through."""
    def tok(*pieces: Any, **kw: Any) -> list[int]:
        req = tokenize_pb2.TokenizeRequest(content_pieces=list(pieces), **kw)
        return list(grpc_stub.Tokenize(req, timeout=10).tokens)

    def text(s: str) -> Any:
        return common_pb2.PromptPiece(text=s)

    def ids(*t: int) -> Any:
        return common_pb2.PromptPiece(tokens=common_pb2.TokenIds(ids=list(t)))

    hello = tok(text("Hello"))
    world = tok(text(" world"))
    assert tok(text("Hello"), ids(7, 99999999), text(" world")) == [*hello, 7, 99999999, *world]
    assert tok(text("Hello"), text(" world"), add_special=True) == [128000, *hello, *world]
    assert tok(ids(5), text("Hello"), add_special=True) == [5, *hello]
    assert tok(text("<|eot_id|>"), parse_special=False) != [128009]
    resp = grpc_stub.Tokenize(tokenize_pb2.TokenizeRequest(
        content_pieces=[ids(9906), text(" world")], with_pieces=True), timeout=10)
    assert [p.id for p in resp.pieces] == [9906, *world] and resp.pieces[0].piece == "Hello"
    for bad, words in (
            (tokenize_pb2.TokenizeRequest(content="x", content_pieces=[text("y")]), "not both"),
            (tokenize_pb2.TokenizeRequest(content_pieces=[common_pb2.PromptPiece()]),
             "set text or tokens"),
            (tokenize_pb2.TokenizeRequest(content_pieces=[ids(-1)], with_pieces=True),
             "outside the vocabulary")):
        with pytest.raises(grpc.RpcError) as err:
            grpc_stub.Tokenize(bad, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert words in (err.value.details() or "")


# -- server info ----------------------------------------------------------------------------
def test_get_props(grpc_stub: Any, grpc_service: ServiceProcess, tiny_bpe_path: Path) -> None:
    p = grpc_stub.GetProps(server_pb2.GetPropsRequest(), timeout=10)
    assert p.total_slots == 4
    assert p.model_path == str(tiny_bpe_path)
    assert "<|start_header_id|>" in p.chat_template
    assert p.default_generation_settings.n_ctx == 512
    assert p.default_generation_settings.params.temperature == pytest.approx(0.8)
    assert p.bos_token == "<|begin_of_text|>"
    assert p.build_info


def test_list_models(grpc_stub: Any) -> None:
    resp = grpc_stub.ListModels(server_pb2.ListModelsRequest(), timeout=10)
    props = grpc_stub.GetProps(server_pb2.GetPropsRequest(), timeout=10)
    assert resp.object == "list" and len(resp.data) == 1
    m = resp.data[0]
    assert m.id == props.model_alias and m.object == "model" and m.created > 0
    assert (m.meta.n_vocab, m.meta.n_ctx_train, m.meta.n_embd) == (128256, 4096, 64)
    assert m.meta.n_params > 0 and m.meta.size > 0


def test_model_loading_is_logged_with_progress(grpc_service: ServiceProcess) -> None:
    log = grpc_service.log()
    assert "loading model" in log and "100%" in log
    assert "4 slots of 512 tokens" in log


def test_the_server_process_never_loads_numpy(grpc_service: ServiceProcess,
                                             grpc_stub: Any) -> None:
    # numpy, once loaded, makes libllama's CPU matrix kernels ~3% slower in the same process
    # (docs/benchmarks.md). Both kinds of token probabilities, the prompt read in bulk and
    # Tokenize run first, so that a lazy import on their paths would show.
    ids = list(range(10, 110))
    for post in (False, True):
        r = complete(grpc_stub, prompt=ids, n_predict=2, n_probs=3, post_sampling_probs=post)
        assert r.code == grpc.StatusCode.OK
        probs = [p for m in r.messages for p in m.completion_probabilities]
        assert [len(p.top_probs if post else p.top_logprobs) for p in probs] == [3, 3]
    grpc_stub.Tokenize(tokenize_pb2.TokenizeRequest(content="hello", with_pieces=True))
    maps = Path(f"/proc/{grpc_service.proc.pid}/maps").read_text()
    assert "libllama" in maps and "numpy" not in maps


def test_reflection_lists_the_service(grpc_service: ServiceProcess) -> None:
    db = ProtoReflectionDescriptorDatabase(grpc_service.channel())
    services = db.get_services()
    assert "llama.v1.LlamaServer" in services and "grpc.health.v1.Health" in services
    desc = db.FindFileContainingSymbol("llama.v1.LlamaServer")
    assert desc.name == "llama/v1/service.proto"


def test_health_serving(grpc_service: ServiceProcess) -> None:
    health = grpc_service.health()
    for name in ("", "llama.v1.LlamaServer"):
        req = health_pb2.HealthCheckRequest(service=name)
        assert health.Check(req, timeout=10).status == SERVING


def test_every_generation_rpc_closes_its_arrival(tiny_bpe_path: Path) -> None:
    """In process, to read the engine: whatever way a generation RPC ends (served, refused
    before or after parsing, cancelled by its client), no Arrival stays open to make the
    engine wait (service.engine.engine.Arrival)."""

    async def scenario() -> None:
        config = load_config(["-m", str(tiny_bpe_path), "-c", "512", "-np", "2"], env={})
        handle = await start_server(config, "127.0.0.1", 0)
        try:
            await asyncio.wait_for(handle.loaded.wait(), 60)
            assert handle.runtime is not None
            async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as ch:
                stub = service_pb2_grpc.LlamaServerStub(ch)
                ok = completion_request(prompt="Hello", n_predict=2)
                assert [m async for m in stub.Completion(ok)][-1].stop
                chat = chat_request(messages=USER_HELLO, max_completion_tokens=2)
                assert [m async for m in stub.ChatCompletion(chat)]
                for call in (stub.Completion(completion_request(prompt=[10**9])),
                             stub.ChatCompletion(chat_request(messages=[])),
                             stub.OpenAICompletion(completion_request(prompt="a", echo=True))):
                    with pytest.raises(grpc.aio.AioRpcError) as err:
                        _ = [m async for m in call]
                    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                long = stub.Completion(completion_request(prompt="Hello", n_predict=400,
                                                          ignore_eos=True))
                await long.read()  # started
                long.cancel()
            for _ in range(100):  # the cancelled handler ends on the server's own time
                if handle.runtime.engine.n_arriving == 0:
                    break
                await asyncio.sleep(0.05)
            assert handle.runtime.engine.n_arriving == 0
        finally:
            await handle.stop(0)

    asyncio.run(scenario())


def test_health_not_serving_while_the_model_loads(tiny_bpe_path: Path) -> None:
    """In process: start_server opens the port and returns before the model loads (on a worker
    thread, ~0.5 s), so the first calls see the loading state."""

    async def scenario() -> None:
        config = load_config(["-m", str(tiny_bpe_path), "-c", "512", "-np", "1"], env={})
        handle = await start_server(config, "127.0.0.1", 0)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as ch:
                health = health_pb2_grpc.HealthStub(ch)
                stub = service_pb2_grpc.LlamaServerStub(ch)
                check = health_pb2.HealthCheckRequest()
                assert (await health.Check(check)).status == NOT_SERVING
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await stub.GetProps(server_pb2.GetPropsRequest())
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "loading" in (err.value.details() or "").lower()
                assert not handle.loaded.is_set(), "the model loaded too fast to observe"
                await asyncio.wait_for(handle.loaded.wait(), 60)
                assert handle.runtime is not None and handle.load_error is None
                assert (await health.Check(check)).status == SERVING
                props = await stub.GetProps(server_pb2.GetPropsRequest())
                assert props.total_slots == 1
        finally:
            await handle.stop(0)

    asyncio.run(scenario())


def test_subprocess_health_not_serving_until_the_model_loads(tiny_bpe_path: Path,
                                                             tmp_path: Path) -> None:
    """The CLI's server, its model load held by service.server's test hook: health says
    NOT_SERVING and generation UNAVAILABLE for as long as it loads, then SERVING."""
    hold = tmp_path / "hold-load"
    hold.touch()
    svc = ServiceProcess.start(tiny_bpe_path, ctx=512, parallel=1,
                               env={HOLD_LOAD_ENV: str(hold)}, wait=False)
    try:
        health = svc.health()
        status = None
        for _ in range(600):  # until the port is open
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                break
            except grpc.RpcError:
                time.sleep(0.05)
        assert status == NOT_SERVING
        r = complete(svc.stub(), prompt="too early", n_predict=2)
        assert r.code == grpc.StatusCode.UNAVAILABLE and "loading" in r.details.lower()
        hold.unlink()
        svc.wait_serving()
        assert complete(svc.stub(), prompt="now", n_predict=2).code == grpc.StatusCode.OK
    finally:
        svc.stop()


# -- API keys ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keyed(tiny_bpe_path: Path) -> Iterator[ServiceProcess]:
    with running_service(tiny_bpe_path, "--api-key", "sekrit", ctx=512, parallel=1) as svc:
        yield svc


@pytest.mark.parametrize("metadata", [None, [("authorization", "Bearer wrong")],
                                      [("authorization", "sekrit")]],
                         ids=["missing", "wrong", "not-bearer"])
def test_api_key_required(keyed: ServiceProcess, metadata: Any) -> None:
    stub = keyed.stub()
    r = complete(stub, metadata=metadata, prompt="Hi", n_predict=2)
    assert r.code == grpc.StatusCode.UNAUTHENTICATED and r.messages == []
    with pytest.raises(grpc.RpcError) as err:
        stub.Tokenize(tokenize_pb2.TokenizeRequest(content="x"), metadata=metadata, timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as err:
        stub.Cancel(server_pb2.CancelRequest(id="x"), metadata=metadata, timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_right_api_key_works_and_public_methods_need_none(keyed: ServiceProcess) -> None:
    stub = keyed.stub()
    auth = [("authorization", "Bearer sekrit")]
    r = complete(stub, metadata=auth, prompt="Hi", n_predict=2)
    assert r.code == grpc.StatusCode.OK and len(r.tokens) == 2
    call = stub.OpenAICompletion(completion_request(prompt="Hi", n_predict=1), metadata=auth,
                                 timeout=30)
    assert list(call)[-1].choices[0].finish_reason == "length"
    assert keyed.health().Check(health_pb2.HealthCheckRequest(), timeout=10).status == SERVING
    assert stub.GetProps(server_pb2.GetPropsRequest(), timeout=10).total_slots == 1
    assert "llama.v1.LlamaServer" in ProtoReflectionDescriptorDatabase(
        keyed.channel()).get_services()


@pytest.mark.slow
def test_shutdown_is_prompt_after_a_health_watch(tiny_bpe_path: Path) -> None:
    """gRPC clients with client-side health checking keep a Watch open; SIGTERM must still
    end the server once its drain time is up."""
    svc = ServiceProcess.start(tiny_bpe_path, "--drain-timeout", "1", ctx=512, parallel=1)
    try:
        watch = svc.health().Watch(health_pb2.HealthCheckRequest(), timeout=30)
        assert next(watch).status == SERVING
        watch.cancel()
        svc.proc.send_signal(signal.SIGTERM)
        try:
            code = svc.proc.wait(10)
        except subprocess.TimeoutExpired:
            code = None
        assert code == 0, "the server did not exit within 10 s of SIGTERM"
    finally:
        if svc.proc.poll() is None:
            svc.proc.kill()
        svc.stop()
