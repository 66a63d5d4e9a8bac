"""The feature names GetServerInfo reports: each names the RPCs and request fields that serve
it, and, where a flag turns it on, that condition.

A feature is listed only while every RPC it needs is served by the servicer (not left to the
generated base class, which answers UNIMPLEMENTED) and its condition holds for this runtime,
so the list cannot claim what the server does not do; tests/test_server_info.py checks the
fields too. Adding a feature is one entry here plus a line in docs/api.md ("Server info").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from llama.v1 import service_pb2_grpc

from service.runtime import Runtime

_BASE = service_pb2_grpc.LlamaServerServicer


def _always(rt: Runtime) -> bool:
    return True


def _generates(rt: Runtime) -> bool:
    # --embedding restricts the server to embeddings (service.embeddings.check_generation).
    return not rt.config.context.embeddings


def _has_fim(rt: Runtime) -> bool:
    fim = rt.model.vocab.fim_tokens()
    return _generates(rt) and min(fim["pre"], fim["suf"], fim["mid"]) >= 0


def reranks(rt: Runtime) -> bool:
    """Whether Rerank answers (service.embeddings.check_reranking)."""
    ctx = rt.config.context
    return ctx.embeddings and ctx.pooling == "rank"


@dataclass(frozen=True)
class Feature:
    name: str
    rpcs: tuple[str, ...]
    fields: tuple[str, ...] = ()  # "Message.field": request fields the feature is
    enabled: Callable[[Runtime], bool] = _always


FEATURES: tuple[Feature, ...] = (
    Feature("completion", ("Completion",), enabled=_generates),
    Feature("openai_completion", ("OpenAICompletion",), enabled=_generates),
    Feature("chat_completion", ("ChatCompletion",), enabled=_generates),
    Feature("apply_template", ("ApplyTemplate",)),
    Feature("tokenize", ("Tokenize", "Detokenize")),
    Feature("infill", ("Infill",), enabled=_has_fim),
    Feature("embeddings", ("Embed", "OpenAIEmbed"),
            enabled=lambda rt: rt.config.context.embeddings),
    Feature("rerank", ("Rerank",), enabled=reranks),
    Feature("props", ("GetProps",)),
    Feature("set_props", ("SetProps",), enabled=lambda rt: rt.config.endpoints.props),
    Feature("slots", ("ListSlots",), enabled=lambda rt: rt.config.endpoints.slots),
    Feature("slot_actions", ("SlotAction",),
            enabled=lambda rt: rt.config.endpoints.slot_save_path is not None),
    Feature("slot_snapshots", ("ExportSlot", "ImportSlot")),
    Feature("metrics", ("GetMetrics",), enabled=lambda rt: rt.config.endpoints.metrics),
    Feature("lora_adapters", ("ListLoraAdapters", "SetLoraAdapters")),
    Feature("models", ("ListModels",)),
    Feature("server_info", ("GetServerInfo",)),
    Feature("get_load", ("GetLoad",)),
    Feature("cancel", ("Cancel",)),
    Feature("request_id", ("Completion", "ChatCompletion", "Cancel"),
            ("CompletionRequest.request_id", "ChatCompletionRequest.request_id"), _generates),
    Feature("priority", ("Completion", "ChatCompletion"),
            ("CompletionRequest.priority", "ChatCompletionRequest.priority"), _generates),
    # typed forms beside the polymorphic Value / Struct fields (docs/api.md); not
    # typed_tool_choice, checked but without effect until tool calls are (issue 18)
    Feature("typed_inputs", ("Completion", "ChatCompletion"),
            ("CompletionRequest.stop_sequences", "CompletionRequest.typed_logit_bias",
             "CompletionRequest.json_schema_json", "ChatCompletionRequest.stop_sequences",
             "ChatCompletionRequest.typed_logit_bias", "ChatCompletionRequest.json_schema_json",
             "ResponseFormat.schema_json",
             "JsonSchemaFormat.schema_json", "FunctionDefinition.parameters_json"), _generates),
    # google.rpc details (ErrorInfo, BadRequest, RetryInfo) on every non-OK status
    Feature("rich_errors", ()),
)


def served_rpcs(servicer: type) -> frozenset[str]:
    """The RPCs a servicer class implements itself."""
    return frozenset(name for name in dir(_BASE) if not name.startswith("_")
                     and getattr(servicer, name, None) is not getattr(_BASE, name))


def served_features(servicer: type, rt: Runtime) -> list[str]:
    """Names of the features this servicer serves with this runtime, in FEATURES' order."""
    served = served_rpcs(servicer)
    return [f.name for f in FEATURES if served.issuperset(f.rpcs) and f.enabled(rt)]
