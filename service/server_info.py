"""The server's own descriptions: /props, /v1/models, the engine's load and GetServerInfo, as
llama.v1 messages."""

from __future__ import annotations

from typing import Any

from llama.v1 import server_info_pb2, server_pb2

from native.vocab import Vocab
from service.chat_parse_formats import CONTENT_ONLY, detect_format
from service.engine.scheduler import Load
from service.messages import default_settings
from service.runtime import Runtime
from service.server_features import reranks


def props_response(rt: Runtime, build_info: str) -> Any:
    vocab = rt.model.vocab
    settings = default_settings(rt)
    resp = server_pb2.PropsResponse(
        total_slots=rt.n_slots, model_path=rt.config.model.path,
        chat_template=_as_lexed(rt.templates.default.source), build_info=build_info,
        model_alias=rt.model_name,
        bos_token=vocab.token_to_piece(vocab.bos).decode("utf-8", "replace")
        if vocab.bos >= 0 else "",
        eos_token=vocab.token_to_piece(vocab.eos).decode("utf-8", "replace")
        if vocab.eos >= 0 else "",
        endpoint_slots=rt.config.endpoints.slots, endpoint_props=rt.config.endpoints.props,
        endpoint_metrics=rt.config.endpoints.metrics, is_sleeping=False,
        model_ftype=rt.model.ftype_name(), media_marker=MEDIA_MARKER)
    resp.default_generation_settings.n_ctx = rt.engine.n_ctx_slot
    resp.default_generation_settings.params.CopyFrom(settings)
    # llama-server's defaults shown here carry its default kind alone, whatever --spec-type says
    resp.default_generation_settings.params.speculative_types = "none"
    # The rest of the spec's example slot, and what the templates say (llama-server's keys).
    resp.default_generation_settings.id_task = -1
    resp.default_generation_settings.next_token.CopyFrom(server_pb2.NextTokenInfo(
        has_next_token=True, n_remain=rt.defaults.n_predict))
    templates = rt.templates
    resp.chat_template_caps.update((templates.tool_use or templates.default).caps.to_map())
    if rt.config.chat.use_jinja and templates.tool_use is not None:
        resp.chat_template_tool_use = _as_lexed(templates.tool_use.source)
    _set_modalities(resp.modalities, rt)
    return resp


def _as_lexed(source: str) -> str:
    """A template's source as llama-server reports it: its Jinja lexer's copy, which drops one
    final newline (Jinja's keep_trailing_newline off)."""
    return source[:-1] if source.endswith("\n") else source


def models_response(rt: Runtime) -> Any:
    m = rt.model
    # llama-server's aliases are a sorted set, holding the model path when --alias is not given
    info = server_pb2.ModelInfo(id=rt.model_name, object="model", created=rt.created,
                                owned_by="llamacpp",
                                aliases=sorted(rt.config.model.served_names))
    info.meta.vocab_type = m.vocab.type
    info.meta.n_vocab = m.vocab.n_tokens
    info.meta.n_ctx_train = m.n_ctx_train
    info.meta.n_embd = m.n_embd
    info.meta.n_params = m.n_params
    info.meta.size = m.size
    info.meta.n_ctx = rt.engine.n_ctx_slot
    info.meta.ftype = m.ftype_name()
    listing = server_pb2.ModelListing(
        name=rt.model_name, model=rt.model_name, type="model", tags=[""],
        capabilities=["completion"],
        details=server_pb2.ModelListingDetails(format="gguf", families=[""]))
    return server_pb2.ListModelsResponse(object="list", data=[info], models=[listing])


def load_response(load: Load) -> Any:
    return server_pb2.LoadResponse(
        n_processing=load.n_processing, n_waiting=load.n_waiting,
        total_slots=len(load.slot_cells),
        idle_slots=sum(1 for _, busy, _ in load.slot_cells if not busy),
        kv_cells_total=load.kv_cells_total, kv_cells_used=load.kv_cells_used,
        kv_cells_reserved=load.kv_cells_reserved,
        slots=[server_pb2.SlotLoad(id=i, busy=busy, n_cells=n)
               for i, busy, n in load.slot_cells])


API_VERSION = "llama.v1"
# libmtmd's default marker (llama-server draws a random one per process); no model served here
# takes media, so nothing reads it.
MEDIA_MARKER = "<__media__>"
NO_PARSER = "none"
_POOLING_NAMES = {-1: "unspecified", 0: "none", 1: "mean", 2: "cls", 3: "last", 4: "rank"}


def server_info_response(rt: Runtime, build_info: str, features: list[str]) -> Any:
    """GetServerInfo's answer. Walks the whole vocabulary once (the eog list): build it off
    the event loop, once per runtime."""
    ctx, cfg = rt.ctx, rt.config
    resp = server_info_pb2.GetServerInfoResponse(
        api_version=API_VERSION, features=features, build_info=build_info,
        model=rt.model_name, n_vocab=rt.model.vocab.n_tokens)
    resp.context.CopyFrom(server_info_pb2.ContextLimits(
        n_ctx=ctx.n_ctx, n_ctx_slot=rt.engine.n_ctx_slot, n_ctx_train=rt.model.n_ctx_train,
        total_slots=rt.n_slots, n_batch=ctx.n_batch, n_ubatch=ctx.n_ubatch,
        max_queue=cfg.endpoints.max_queue))
    _set_modalities(resp.modalities, rt)
    resp.embedding.CopyFrom(server_info_pb2.EmbeddingInfo(
        embeddings=cfg.context.embeddings, reranking=reranks(rt),
        pooling=_POOLING_NAMES.get(ctx.pooling, str(ctx.pooling)), n_embd=rt.model.n_embd))
    resp.chat.CopyFrom(chat_info(rt))
    resp.special_tokens.CopyFrom(special_tokens(rt.model.vocab))
    return resp


def special_tokens(vocab: Vocab) -> Any:
    fim = vocab.fim_tokens()
    return server_info_pb2.SpecialTokens(
        bos=vocab.bos, eos=vocab.eos, eot=vocab.eot, sep=vocab.sep, nl=vocab.nl, pad=vocab.pad,
        eog=sorted(vocab.eog_tokens()), add_bos=vocab.add_bos, add_eos=vocab.add_eos,
        **{f"fim_{name}": token for name, token in fim.items()})


def chat_info(rt: Runtime) -> Any:
    """How chat output is parsed: the default template's format (service.tool_calls picks it
    per request the same way) and the server's reasoning_format, unless --skip-chat-parsing."""
    cfg, caps = rt.config.chat, rt.templates.default.caps
    fmt = CONTENT_ONLY if cfg.skip_chat_parsing else detect_format(rt.templates.default.source)
    parsed = not cfg.skip_chat_parsing
    return server_info_pb2.ChatInfo(
        jinja=cfg.use_jinja, chat_format=fmt,
        tool_call_parser=fmt if parsed else NO_PARSER,
        reasoning_parser=cfg.reasoning_format if parsed else NO_PARSER,
        has_tool_use_template=rt.templates.tool_use is not None,
        template_caps=server_info_pb2.ChatTemplateCaps(
            **{f.name: getattr(caps, f.name)
               for f in server_info_pb2.ChatTemplateCaps.DESCRIPTOR.fields}))


def _set_modalities(out: Any, rt: Runtime) -> None:
    """What the projector (--mmproj) takes; present, all false, for a text-only model."""
    out.SetInParent()
    proj = rt.projector
    if proj is not None:
        out.vision, out.audio = proj.supports_vision, proj.supports_audio
