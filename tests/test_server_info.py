"""GetServerInfo (issue 25, item 4) over gRPC against the real service: its figures agree with
what the other RPCs and the model say, and its feature list is true (each feature's RPCs answer,
each feature's request fields are read by the service and not listed as ignored)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.rpc import error_details_pb2
from grpc_harness import ServiceProcess, completion_request, running_service
from grpc_status import rpc_status
from llama.v1 import server_info_pb2, server_pb2, service_pb2, tokenize_pb2
from test_api_surface import (
    IGNORED_THOUGH_NAMED,
    NOT_YET_SERVED_FIELDS,
    names_read,
)

from service.chat_parse_formats import CONTENT_ONLY, detect_format
from service.server_features import FEATURES, served_rpcs
from service.servicer import LlamaServicer

SERVICE = service_pb2.DESCRIPTOR.services_by_name["LlamaServer"]
API_KEY = "server-info-key"
SERVED = served_rpcs(LlamaServicer)


def server_info(stub: Any) -> Any:
    return stub.GetServerInfo(server_info_pb2.GetServerInfoRequest(), timeout=30)


@pytest.fixture(scope="module")
def info(grpc_stub: Any) -> Any:
    return server_info(grpc_stub)


@pytest.mark.slow
def test_limits_agree_with_props_models_and_load(grpc_stub: Any, info: Any) -> None:
    props = grpc_stub.GetProps(server_pb2.GetPropsRequest(), timeout=30)
    meta = grpc_stub.ListModels(server_pb2.ListModelsRequest(), timeout=30).data[0].meta
    load = grpc_stub.GetLoad(server_pb2.GetLoadRequest(), timeout=30)
    assert info.api_version == "llama.v1"
    assert info.build_info == props.build_info and info.model == props.model_alias
    ctx = info.context
    # grpc_service runs -c 2048 -np 4: four slots of 512 cells.
    assert (ctx.n_ctx, ctx.total_slots, ctx.n_ctx_slot) == (2048, 4, 512)
    assert ctx.n_ctx == load.kv_cells_total and ctx.total_slots == props.total_slots
    assert ctx.n_ctx_slot == props.default_generation_settings.n_ctx
    assert ctx.n_ctx_train == meta.n_ctx_train and info.n_vocab == meta.n_vocab
    assert 0 < ctx.n_ubatch <= ctx.n_batch and ctx.max_queue == 0
    assert info.embedding.n_embd == meta.n_embd
    assert not info.embedding.embeddings and not info.embedding.reranking
    assert info.embedding.pooling in {"none", "mean", "cls", "last", "rank", "unspecified"}
    assert info.HasField("modalities") and not info.modalities.vision


def _ignored(field: str) -> bool:
    """Whether a ChatCompletionRequest field is listed as having no effect yet."""
    return any(field in listed.get("ChatCompletionRequest", {})
               for listed in (NOT_YET_SERVED_FIELDS, IGNORED_THOUGH_NAMED))


@pytest.mark.slow
def test_chat_info_names_the_parsers(grpc_stub: Any, info: Any) -> None:
    chat = info.chat
    # Tied to the API surface's lists: the parsers are served, so they are named.
    assert not _ignored("parse_tool_calls") and not _ignored("reasoning_format")
    template = grpc_stub.GetProps(server_pb2.GetPropsRequest(), timeout=30).chat_template
    assert chat.chat_format == detect_format(template) != CONTENT_ONLY
    assert chat.tool_call_parser == chat.chat_format
    assert chat.reasoning_parser == "auto"  # --reasoning-format's default
    # tiny-bpe carries Llama 3's template: string content, a system role, tools.
    caps = chat.template_caps
    assert caps.supports_string_content and caps.supports_system_role and caps.supports_tools


@pytest.mark.slow
def test_special_tokens_are_the_vocabulary_s(grpc_stub: Any, info: Any) -> None:
    props = grpc_stub.GetProps(server_pb2.GetPropsRequest(), timeout=30)
    special = info.special_tokens

    def text(token: int) -> str:
        resp = grpc_stub.Detokenize(tokenize_pb2.DetokenizeRequest(tokens=[token]), timeout=30)
        return str(resp.content)

    assert special.bos >= 0 and text(special.bos) == props.bos_token
    assert special.eos >= 0 and text(special.eos) == props.eos_token
    assert special.eos in special.eog and list(special.eog) == sorted(set(special.eog))
    assert special.eot in special.eog  # Llama 3: <|eot_id|>
    assert text(special.eot) == "<|eot_id|>"
    assert special.add_bos
    ids = grpc_stub.Tokenize(tokenize_pb2.TokenizeRequest(content="Hi", add_special=True),
                             timeout=30).tokens
    assert ids[0] == special.bos
    for fim in ("fim_pre", "fim_suf", "fim_mid", "fim_pad", "fim_rep", "fim_sep"):
        assert getattr(special, fim) >= -1


@pytest.mark.slow
def test_every_listed_feature_is_served(grpc_stub: Any, info: Any) -> None:
    features = {f.name: f for f in FEATURES}
    assert len(features) == len(FEATURES), "feature names repeat"
    listed = list(info.features)
    assert listed and len(listed) == len(set(listed))
    assert {"request_id", "priority", "cancel", "get_load", "server_info"} <= set(listed)
    for name in listed:
        for rpc in features[name].rpcs:
            method = SERVICE.methods_by_name[rpc]
            request = message_factory.GetMessageClass(method.input_type)()
            try:  # a client stream gets no message: an empty snapshot changes nothing
                sent = iter(()) if method.client_streaming else request
                response = getattr(grpc_stub, rpc)(sent, timeout=30)
                if method.server_streaming:
                    list(response)
            except grpc.RpcError as e:  # an empty request may be invalid: it was served
                assert e.code() != grpc.StatusCode.UNIMPLEMENTED, (name, rpc, e.details())


def test_feature_fields_exist_and_are_read() -> None:
    read = names_read()
    for feature in FEATURES:
        for rpc in feature.rpcs:
            assert rpc in SERVICE.methods_by_name, (feature.name, rpc)
        for field in feature.fields:
            message, name = field.split(".")
            descriptor = service_pb2.DESCRIPTOR.pool.FindMessageTypeByName(f"llama.v1.{message}")
            assert name in descriptor.fields_by_name, field
            assert name in read, f"{feature.name}: {field} is not read by the service"
            assert name not in NOT_YET_SERVED_FIELDS.get(message, {}), field
            assert name not in IGNORED_THOUGH_NAMED.get(message, {}), field


@pytest.fixture(scope="module")
def keyed_service(tiny_bpe_path: Path) -> Iterator[ServiceProcess]:
    with running_service(tiny_bpe_path, "--api-key", API_KEY, "--metrics", "--max-queue", "3",
                         "--skip-chat-parsing", ctx=512, parallel=1) as svc:
        yield svc


@pytest.mark.slow
def test_needs_the_api_key_and_follows_the_flags(keyed_service: ServiceProcess) -> None:
    stub = keyed_service.stub()
    with pytest.raises(grpc.RpcError) as info:
        server_info(stub)
    err: Any = info.value
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED
    resp = stub.GetServerInfo(server_info_pb2.GetServerInfoRequest(), timeout=30,
                              metadata=(("authorization", f"Bearer {API_KEY}"),))
    assert (resp.context.n_ctx, resp.context.total_slots, resp.context.max_queue) == (512, 1, 3)
    # --metrics is on: listed once GetMetrics is served (not before).
    assert ("metrics" in resp.features) == ("GetMetrics" in SERVED)
    assert "slot_actions" not in resp.features  # no --slot-save-path
    chat = resp.chat
    assert (chat.chat_format, chat.tool_call_parser, chat.reasoning_parser) == (
        CONTENT_ONLY, "none", "none")



@pytest.mark.slow
def test_embedding_mode_lists_no_generation(minilm_path: Path) -> None:
    with running_service(minilm_path, "--embedding", "--pooling", "mean", ctx=512,
                         parallel=1) as svc:
        resp = server_info(svc.stub())
    assert resp.embedding.embeddings and resp.embedding.pooling == "mean"
    assert not resp.embedding.reranking and "rerank" not in resp.features
    assert ("embeddings" in resp.features) == ("Embed" in SERVED)
    generation = {"completion", "openai_completion", "chat_completion", "infill", "request_id",
                  "priority", "typed_inputs"}
    assert not generation & set(resp.features), resp.features
    assert {"tokenize", "server_info", "get_load"} <= set(resp.features)


@pytest.mark.slow
def test_rich_errors_feature_means_error_details(grpc_stub: Any, info: Any) -> None:
    assert "rich_errors" in info.features
    with pytest.raises(grpc.RpcError) as raised:
        list(grpc_stub.Completion(completion_request(prompt="x", n_probs=-3), timeout=30))
    status = rpc_status.from_call(raised.value)
    assert status is not None and status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    infos = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    assert len(infos) == 1
    error_info = error_details_pb2.ErrorInfo()
    infos[0].Unpack(error_info)
    assert error_info.domain == "llama.v1" and error_info.reason
