"""The server's own descriptions: /props, /v1/models and the engine's load, as llama.v1
messages."""

from __future__ import annotations

from typing import Any

from llama.v1 import server_pb2

from service.engine.scheduler import Load
from service.messages import generation_settings
from service.runtime import Runtime


def props_response(rt: Runtime, build_info: str) -> Any:
    vocab = rt.model.vocab
    settings = generation_settings(rt.defaults, rt.engine.n_ctx_slot, rt.model_name)
    resp = server_pb2.PropsResponse(
        total_slots=rt.n_slots, model_path=rt.config.model.path,
        chat_template=rt.templates.default.source, build_info=build_info,
        model_alias=rt.model_name,
        bos_token=vocab.token_to_piece(vocab.bos).decode("utf-8", "replace")
        if vocab.bos >= 0 else "",
        eos_token=vocab.token_to_piece(vocab.eos).decode("utf-8", "replace")
        if vocab.eos >= 0 else "",
        endpoint_slots=rt.config.endpoints.slots, endpoint_props=rt.config.endpoints.props,
        endpoint_metrics=rt.config.endpoints.metrics, is_sleeping=False)
    resp.default_generation_settings.n_ctx = rt.engine.n_ctx_slot
    resp.default_generation_settings.params.CopyFrom(settings)
    resp.modalities.SetInParent()
    return resp


def models_response(rt: Runtime) -> Any:
    m = rt.model
    info = server_pb2.ModelInfo(id=rt.model_name, object="model", created=rt.created,
                                owned_by="llamacpp", aliases=list(rt.config.model.aliases))
    info.meta.vocab_type = m.vocab.type
    info.meta.n_vocab = m.vocab.n_tokens
    info.meta.n_ctx_train = m.n_ctx_train
    info.meta.n_embd = m.n_embd
    info.meta.n_params = m.n_params
    info.meta.size = m.size
    return server_pb2.ListModelsResponse(object="list", data=[info])


def load_response(load: Load) -> Any:
    return server_pb2.LoadResponse(
        n_processing=load.n_processing, n_waiting=load.n_waiting,
        total_slots=len(load.slot_cells),
        idle_slots=sum(1 for _, busy, _ in load.slot_cells if not busy),
        kv_cells_total=load.kv_cells_total, kv_cells_used=load.kv_cells_used,
        kv_cells_reserved=load.kv_cells_reserved,
        slots=[server_pb2.SlotLoad(id=i, busy=busy, n_cells=n)
               for i, busy, n in load.slot_cells])
