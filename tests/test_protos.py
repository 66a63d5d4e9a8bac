"""Checks of the gRPC API definition (protos/llama/v1) and its generated code.

- gen/ is what protos/generate.py makes from the current .proto files;
- every RPC has a google.api.http rule, and together they serve llama-server's
  paths, each (verb, path) once (Envoy refuses duplicates);
- request bodies in llama-server's and OpenAI's JSON shapes parse into the
  messages and print back with the same names;
- the field names of the key messages are the spec's JSON names.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor_pb2, json_format
from google.protobuf.descriptor import Descriptor
from llama.v1 import (
    chat_pb2,
    common_pb2,
    completion_pb2,
    embedding_pb2,
    server_pb2,
    tokenize_pb2,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
GENERATE_SCRIPT = REPO_ROOT / "protos" / "generate.py"
DESCRIPTOR_SET = REPO_ROOT / "gen" / "llama_v1.pb"
SERVICE_NAME = "LlamaServer"

# (verb, path) -> RPC: llama-server's documented routes plus our /cancel.
EXPECTED_ROUTES = {
    ("POST", "/completion"): "Completion",
    ("POST", "/completions"): "Completion",
    ("POST", "/v1/completions"): "OpenAICompletion",
    ("POST", "/infill"): "Infill",
    ("POST", "/v1/chat/completions"): "ChatCompletion",
    ("POST", "/chat/completions"): "ChatCompletion",
    ("POST", "/v1/chat/completions/control"): "ControlChatCompletion",
    ("POST", "/apply-template"): "ApplyTemplate",
    ("POST", "/tokenize"): "Tokenize",
    ("POST", "/detokenize"): "Detokenize",
    ("POST", "/embedding"): "Embed",
    ("POST", "/embeddings"): "Embed",
    ("POST", "/v1/embeddings"): "OpenAIEmbed",
    ("POST", "/reranking"): "Rerank",
    ("POST", "/rerank"): "Rerank",
    ("POST", "/v1/rerank"): "Rerank",
    ("POST", "/v1/reranking"): "Rerank",
    ("GET", "/props"): "GetProps",
    ("POST", "/props"): "SetProps",
    ("GET", "/slots"): "ListSlots",
    ("POST", "/slots/{id_slot}"): "SlotAction",
    ("GET", "/metrics"): "GetMetrics",
    ("GET", "/lora-adapters"): "ListLoraAdapters",
    ("POST", "/lora-adapters"): "SetLoraAdapters",
    ("GET", "/v1/models"): "ListModels",
    ("GET", "/models"): "ListModels",
    ("POST", "/cancel"): "Cancel",
    ("GET", "/load"): "GetLoad",
    ("GET", "/server-info"): "GetServerInfo",
    ("GET", "/slots/{id_slot}/export"): "ExportSlot",
    ("POST", "/slots/import"): "ImportSlot",
}


def test_generated_code_matches_protos() -> None:
    result = subprocess.run(
        [sys.executable, str(GENERATE_SCRIPT), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, (
        "gen/ differs from a fresh generation; run `python protos/generate.py`\n"
        + result.stdout
        + result.stderr
    )


def _service_methods() -> list[descriptor_pb2.MethodDescriptorProto]:
    """LlamaServer's methods as Envoy sees them, from gen/llama_v1.pb."""
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes())
    services = [
        service
        for file in descriptor_set.file
        if file.package == "llama.v1"
        for service in file.service
        if service.name == SERVICE_NAME
    ]
    assert len(services) == 1
    return list(services[0].method)


def _verb_and_path(rule: http_pb2.HttpRule) -> tuple[str, str]:
    verb = rule.WhichOneof("pattern")
    assert verb is not None and verb != "custom", rule
    return verb.upper(), getattr(rule, verb)


def _routes_of(method: descriptor_pb2.MethodDescriptorProto) -> list[tuple[str, str]]:
    assert method.options.HasExtension(annotations_pb2.http), f"{method.name} has no HTTP rule"
    rule = method.options.Extensions[annotations_pb2.http]
    rules = [rule, *rule.additional_bindings]
    for each in rules:
        verb, path = _verb_and_path(each)
        if verb == "POST":
            assert each.body, f"{method.name} {path}: POST without a body mapping"
        else:
            assert not each.body, f"{method.name} {path}: GET with a body"
    return [_verb_and_path(each) for each in rules]


def test_every_rpc_has_an_http_rule() -> None:
    methods = _service_methods()
    assert len(methods) == len(set(EXPECTED_ROUTES.values()))
    for method in methods:
        assert _routes_of(method), method.name


def test_http_rules_serve_llama_server_paths_once() -> None:
    routes = [(route, method.name) for method in _service_methods() for route in _routes_of(method)]
    assert len(routes) == len({route for route, _ in routes}), "duplicate (verb, path)"
    assert dict(routes) == EXPECTED_ROUTES


# A /completion body using every documented parameter, with non-default
# values so that the JSON printer writes each one back.
LLAMA_SERVER_COMPLETION_BODY: dict[str, Any] = {
    "prompt": [12, 34, "string", 56],
    "temperature": 0.7,
    "dynatemp_range": 0.1,
    "dynatemp_exponent": 1.5,
    "top_k": 20,
    "top_p": 0.9,
    "min_p": 0.1,
    "n_predict": 32,
    "n_indent": 2,
    "n_keep": -1,
    "stream": True,
    "stop": ["\n", "###"],
    "typical_p": 0.95,
    "repeat_penalty": 1.25,
    "repeat_last_n": 128,
    "presence_penalty": 0.5,
    "frequency_penalty": 0.25,
    "dry_multiplier": 0.75,
    "dry_base": 2.0,
    "dry_allowed_length": 3,
    "dry_penalty_last_n": -1,
    "dry_sequence_breakers": ["\n", ":"],
    "xtc_probability": 0.5,
    "xtc_threshold": 0.2,
    "mirostat": 2,
    "mirostat_tau": 4.0,
    "mirostat_eta": 0.2,
    "grammar": 'root ::= "yes" | "no"',
    "json_schema": {"type": "object", "properties": {"a": {"type": "string"}}},
    "seed": 42,
    "ignore_eos": True,
    "logit_bias": [[15043, 1.0], ["Hello", False]],
    "n_probs": 5,
    "min_keep": 1,
    "t_max_predict_ms": 500,
    "image_data": [{"data": "aGVsbG8=", "id": 12}],
    "id_slot": 1,
    "cache_prompt": False,
    "return_tokens": True,
    "samplers": ["top_k", "temperature"],
    "timings_per_token": True,
    "post_sampling_probs": True,
    "response_fields": ["content", "generation_settings/n_predict"],
    "lora": [{"id": 1, "scale": 0.5}],
    "n_cmpl": 2,
    "n_cache_reuse": 256,
    "return_progress": True,
    "top_n_sigma": 1.5,
    "n_discard": 16,
}

# proto3 JSON writes 64-bit integers as strings.
INT64_FIELDS = ("seed", "t_max_predict_ms")


def _to_json_dict(message: Any) -> dict[str, Any]:
    printed: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return printed


def test_completion_request_round_trips_llama_server_json() -> None:
    request = json_format.ParseDict(
        LLAMA_SERVER_COMPLETION_BODY, completion_pb2.CompletionRequest()
    )
    restored = _to_json_dict(request)
    for name in INT64_FIELDS:
        restored[name] = int(restored[name])
    assert restored == LLAMA_SERVER_COMPLETION_BODY
    assert request.WhichOneof("prompt_input") == "prompt"
    assert request.HasField("cache_prompt") and not request.cache_prompt
    assert request.id_slot == 1


@pytest.mark.parametrize(
    "prompt",
    [
        "plain text",
        [12, 34, 56],
        [12, 34, "string", 56, 78],
        ["string1", [12, 34, 56], {"prompt_string": "s", "multimodal_data": ["aGk="]}],
        {"prompt_string": "s", "multimodal_data": ["aGk="]},
    ],
)
def test_completion_prompt_accepts_every_llama_server_shape(prompt: Any) -> None:
    request = json_format.ParseDict({"prompt": prompt}, completion_pb2.CompletionRequest())
    assert _to_json_dict(request) == {"prompt": prompt}


def test_unset_generation_parameters_are_distinguishable_from_zero() -> None:
    request = json_format.ParseDict(
        {"temperature": 0, "top_k": 0}, completion_pb2.CompletionRequest()
    )
    assert request.HasField("temperature") and request.HasField("top_k")
    assert not request.HasField("top_p") and not request.HasField("n_predict")


def test_speculative_keys_parse_under_llama_server_names() -> None:
    body = {"speculative.n_max": 8, "speculative.n_min": 2, "speculative.p_min": 0.5}
    request = json_format.ParseDict(body, completion_pb2.CompletionRequest())
    assert (request.speculative_n_max, request.speculative_n_min) == (8, 2)
    assert request.speculative_p_min == pytest.approx(0.5)


OPENAI_CHAT_BODY: dict[str, Any] = {
    "model": "gpt-3.5-turbo",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather of a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {}}},
    "max_tokens": 64,
    "max_completion_tokens": 48,
    "n": 1,
    "logprobs": True,
    "top_logprobs": 3,
    "stream": True,
    "stream_options": {"include_usage": True},
    "stop": "\n\n",
    "parse_tool_calls": True,
    "chat_template_kwargs": {"enable_thinking": False},
    "reasoning_format": "deepseek",
    "mirostat": 2,
}


def test_chat_request_round_trips_openai_json() -> None:
    request = json_format.ParseDict(OPENAI_CHAT_BODY, chat_pb2.ChatCompletionRequest())
    assert _to_json_dict(request) == OPENAI_CHAT_BODY
    assert request.messages[1].content.list_value.values[1].struct_value["type"] == "image_url"
    assert request.tools[0].function.parameters["required"][0] == "city"


def test_final_completion_chunk_reads_like_llama_server() -> None:
    final = completion_pb2.CompletionChunk(
        id="cmpl-1",
        content="",
        stop=True,
        stop_type="eos",
        stopping_word="",
        truncated=False,
        tokens_cached=0,
        timings=common_pb2.Timings(prompt_n=5, predicted_n=3),
        generation_settings=common_pb2.GenerationSettings(n_predict=-1),
    )
    printed = json_format.MessageToDict(
        final, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    assert printed["stop"] is True and printed["stop_type"] == "eos"
    assert printed["truncated"] is False and printed["tokens_cached"] == 0
    assert printed["timings"]["prompt_per_second"] == 0
    assert "error" not in printed
    partial = completion_pb2.CompletionChunk(id="cmpl-1", content="Hi", tokens=[4])
    printed = json_format.MessageToDict(
        partial, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    assert printed["stop"] is False
    assert not {"stop_type", "stopping_word", "truncated", "tokens_cached"} & printed.keys()


def _words(text: str) -> list[str]:
    """Names written as whitespace-separated text, to keep the table short."""
    return text.split()


# JSON names from the spec (llama-server's README and response examples).
SPEC_FIELD_NAMES: list[tuple[Descriptor, list[str]]] = [
    (
        completion_pb2.CompletionRequest.DESCRIPTOR,
        [*LLAMA_SERVER_COMPLETION_BODY, "input_prefix", "input_suffix", "input_extra"],
    ),
    (
        completion_pb2.CompletionChunk.DESCRIPTOR,
        _words("""content tokens stop generation_settings model prompt stop_type stopping_word
        timings tokens_cached tokens_evaluated truncated completion_probabilities index id_slot
        tokens_predicted has_new_line"""),
    ),
    (
        common_pb2.Timings.DESCRIPTOR,
        _words("""cache_n prompt_n prompt_ms prompt_per_token_ms prompt_per_second predicted_n
        predicted_ms predicted_per_token_ms predicted_per_second"""),
    ),
    (
        common_pb2.TokenProbability.DESCRIPTOR,
        _words("id logprob token bytes top_logprobs prob top_probs"),
    ),
    (common_pb2.TokenCandidate.DESCRIPTOR, _words("id logprob token bytes prob")),
    (common_pb2.ErrorInfo.DESCRIPTOR, _words("code message type")),
    (
        common_pb2.GenerationSettings.DESCRIPTOR,
        _words("""n_predict seed temperature dynatemp_range dynatemp_exponent top_k top_p min_p
        xtc_probability xtc_threshold typical_p repeat_last_n repeat_penalty presence_penalty
        frequency_penalty dry_multiplier dry_base dry_allowed_length dry_penalty_last_n
        dry_sequence_breakers mirostat mirostat_tau mirostat_eta stop max_tokens n_keep
        n_discard ignore_eos stream n_probs min_keep grammar samplers speculative.n_max
        speculative.n_min speculative.p_min timings_per_token"""),
    ),
    (
        chat_pb2.ChatCompletionRequest.DESCRIPTOR,
        [*OPENAI_CHAT_BODY, "parallel_tool_calls", "reasoning_effort", "temperature"],
    ),
    (
        chat_pb2.ChatMessage.DESCRIPTOR,
        _words("role content name tool_calls tool_call_id reasoning_content"),
    ),
    (completion_pb2.InfillExtraChunk.DESCRIPTOR, ["filename", "text"]),
    (
        tokenize_pb2.TokenizeRequest.DESCRIPTOR,
        _words("content add_special parse_special with_pieces"),
    ),
    (tokenize_pb2.TokenPiece.DESCRIPTOR, ["id", "piece"]),
    (tokenize_pb2.DetokenizeRequest.DESCRIPTOR, ["tokens"]),
    (tokenize_pb2.DetokenizeResponse.DESCRIPTOR, ["content"]),
    (chat_pb2.ApplyTemplateResponse.DESCRIPTOR, ["prompt"]),
    (
        embedding_pb2.EmbedRequest.DESCRIPTOR,
        _words("content input model encoding_format embd_normalize image_data"),
    ),
    (embedding_pb2.EmbeddingResult.DESCRIPTOR, ["index", "embedding"]),
    (embedding_pb2.OpenAIEmbedResponse.DESCRIPTOR, _words("object data model usage")),
    (embedding_pb2.RerankRequest.DESCRIPTOR, _words("query documents top_n model")),
    (
        server_pb2.PropsResponse.DESCRIPTOR,
        _words("default_generation_settings total_slots model_path chat_template build_info"),
    ),
    (
        server_pb2.SlotInfo.DESCRIPTOR,
        _words("id id_task n_ctx speculative is_processing params prompt next_token"),
    ),
    (
        server_pb2.NextTokenInfo.DESCRIPTOR,
        _words("has_next_token has_new_line n_remain n_decoded stopping_word"),
    ),
    (
        server_pb2.SlotActionResponse.DESCRIPTOR,
        _words("id_slot filename n_saved n_written n_restored n_read n_erased timings"),
    ),
    (server_pb2.SlotActionTimings.DESCRIPTOR, ["save_ms", "restore_ms"]),
    (server_pb2.SlotActionOptions.DESCRIPTOR, ["filename"]),
    (server_pb2.LoraAdapter.DESCRIPTOR, ["id", "path", "scale"]),
    (common_pb2.LoraScale.DESCRIPTOR, ["id", "scale"]),
    (server_pb2.ListModelsResponse.DESCRIPTOR, ["object", "data"]),
    (server_pb2.ModelInfo.DESCRIPTOR, _words("id object created owned_by meta")),
    (
        server_pb2.ModelMeta.DESCRIPTOR,
        _words("vocab_type n_vocab n_ctx_train n_embd n_params size"),
    ),
]


@pytest.mark.parametrize(
    ("message", "spec_names"), SPEC_FIELD_NAMES, ids=[m.name for m, _ in SPEC_FIELD_NAMES]
)
def test_field_names_are_the_spec_json_names(message: Descriptor, spec_names: list[str]) -> None:
    known = {field.name for field in message.fields} | {field.json_name for field in message.fields}
    missing = sorted(set(spec_names) - known)
    assert not missing, f"{message.full_name} lacks spec fields {missing}"


def _undocumented(file: descriptor_pb2.FileDescriptorProto) -> list[str]:
    """Messages, fields, oneofs and RPCs of one file without a leading comment.

    Paths follow descriptor.proto's field numbers: message_type 4, field 2,
    nested_type 3, oneof_decl 8, service 6, method 2.
    """
    comments = {
        tuple(loc.path): loc.leading_comments.strip() for loc in file.source_code_info.location
    }
    missing: list[str] = []

    def visit(messages: Any, path: tuple[int, ...], prefix: str) -> None:
        for index, message in enumerate(messages):
            here = (*path, index)
            name = prefix + message.name
            parts: list[tuple[tuple[int, ...], str]] = [(here, name)]
            parts += [((*here, 2, i), f"{name}.{f.name}") for i, f in enumerate(message.field)]
            parts += [
                ((*here, 8, i), f"{name}.{o.name}")
                for i, o in enumerate(message.oneof_decl)
                if not o.name.startswith("_")  # synthetic oneofs of `optional` fields
            ]
            missing.extend(label for key, label in parts if not comments.get(key))
            visit(message.nested_type, (*here, 3), name + ".")

    visit(file.message_type, (4,), "")
    for index, service in enumerate(file.service):
        rpcs: list[tuple[tuple[int, ...], str]] = [((6, index), service.name)]
        rpcs += [
            ((6, index, 2, i), f"{service.name}.{m.name}") for i, m in enumerate(service.method)
        ]
        missing.extend(label for key, label in rpcs if not comments.get(key))
    return missing


def test_every_message_field_and_rpc_is_documented() -> None:
    descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTOR_SET.read_bytes())
    ours = [file for file in descriptor_set.file if file.package == "llama.v1"]
    assert ours
    missing = [name for file in ours for name in _undocumented(file)]
    assert not missing, f"undocumented: {missing}"
