"""The llama.v1.LlamaServer servicer: each RPC converts, calls the engine, converts back.

Streaming contract (docs/api.md): a request rejected before its first message gets a status only
(INVALID_ARGUMENT, UNAVAILABLE...), which a transcoding proxy can still turn into an HTTP error.
Once messages have flowed, every generation ends with a final message that says how it ended
(stop info, or `error`) before the status, because a client behind a transcoding proxy cannot
see trailers then. With `stream: false` each prompt yields exactly one, aggregated, message.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import json_format
from llama.v1 import (
    chat_pb2,
    completion_pb2,
    server_pb2,
    service_pb2_grpc,
    tokenize_pb2,
)

from native import LlamaError
from service.chat_template import TemplateError
from service.engine.engine import Arrival
from service.engine.events import Chunk, Failed, Finished, Started
from service.engine.params import CompletionParams, ParamError
from service.errors import ERROR_KINDS, ServiceError
from service.generation import (
    GenerationRegistry,
    cancel_generation,
    new_request_id,
    run_generation,
)
from service.messages import (
    error_msg,
    final_completion_chunk,
    generation_settings,
    probability_msg,
    timings_msg,
)
from service.prompts import split_prompts, tokenize_prompt
from service.request_params import (
    completion_params,
    prompt_json,
    schema_grammar,
    token_prompts,
)
from service.runtime import Runtime

_log = logging.getLogger(__name__)
RuntimeGetter = Callable[[], Runtime | None]
_FINISH_REASON = {"eos": "stop", "word": "stop", "limit": "length"}
_GenerationMethod = Callable[[Any, Any, grpc.aio.ServicerContext, Arrival], AsyncIterator[Any]]


def _generation_rpc(method: _GenerationMethod) -> Callable[..., AsyncIterator[Any]]:
    """A generation RPC handler that gets its request's Arrival, open from the RPC's start
    (before parsing, templating, tokenizing) until the engine has its tasks or it ends."""

    @functools.wraps(method)
    async def rpc(self: LlamaServicer, request: Any,
                  context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        with self._arrival() as arrival:
            async for msg in method(self, request, context, arrival):
                yield msg

    return rpc


class LlamaServicer(service_pb2_grpc.LlamaServerServicer):  # type: ignore[misc]
    def __init__(self, runtime: RuntimeGetter, build_info: str = "") -> None:
        self._runtime = runtime
        self._registry = GenerationRegistry()
        self._build_info = build_info

    # -- helpers ----------------------------------------------------------------------------
    def _rt(self) -> Runtime:
        rt = self._runtime()
        if rt is None:
            raise ServiceError("unavailable", "Loading model")
        return rt

    def _arrival(self) -> Arrival:
        """The Arrival of a generation request whose reading starts now (engine.Arrival)."""
        rt = self._runtime()
        return Arrival(rt.engine if rt is not None else None)

    @staticmethod
    async def _abort(context: grpc.aio.ServicerContext, err: ServiceError) -> None:
        await context.abort(err.info.grpc_code, err.message)

    def _prepare(self, rt: Runtime, req: Any) -> tuple[list[list[int]], CompletionParams]:
        try:
            params = completion_params(req, rt.defaults, rt.model.vocab, rt.n_slots)
            prompts = token_prompts(req, rt.model.vocab.n_tokens) or [
                tokenize_prompt(p, rt.model.vocab) for p in split_prompts(prompt_json(req))]
        except (ParamError, LlamaError, ValueError) as e:
            raise ServiceError("invalid_argument", str(e)) from e
        for p in prompts:
            if not p:
                raise ServiceError("invalid_argument", "the prompt is empty")
            if len(p) >= rt.engine.n_ctx_slot:
                raise ServiceError(
                    "invalid_argument",
                    f"the request exceeds the available context size: the prompt has {len(p)} "
                    f"tokens, a slot holds {rt.engine.n_ctx_slot}; shorten the prompt or raise "
                    "--ctx-size")
        return prompts, params

    # -- completion -------------------------------------------------------------------------
    @_generation_rpc
    async def Completion(self, request: Any, context: grpc.aio.ServicerContext,
                         arrival: Arrival) -> AsyncIterator[Any]:
        gen_id = new_request_id("cmpl")
        async for msg in self._completion_stream(request, context, gen_id, completion_pb2.
                                                 CompletionChunk, arrival):
            yield msg

    async def _completion_stream(self, request: Any, context: grpc.aio.ServicerContext,
                                 gen_id: str, chunk_type: Any,
                                 arrival: Arrival) -> AsyncIterator[Any]:
        try:
            rt = self._rt()
            prompts, params = self._prepare(rt, request)
        except ServiceError as e:
            await self._abort(context, e)  # nothing sent yet: the status alone is visible
            return
        if not request.stream:
            async for msg in self._aggregate(rt, gen_id, prompts, params, chunk_type, context,
                                             arrival):
                yield msg
            return
        settings = generation_settings(params, rt.engine.n_ctx_slot, rt.model_name,
                                       request.stream)
        slot_of: dict[int, int] = {}
        failure: ServiceError | None = None
        async for index, event in run_generation(rt.engine, self._registry, gen_id, prompts,
                                                 params, arrival):
            if isinstance(event, Started):
                slot_of[index] = event.slot_id
                yield chunk_type(id=gen_id, index=index, id_slot=event.slot_id)
            elif isinstance(event, Chunk):
                msg = chunk_type(id=gen_id, index=index, content=event.text,
                                 tokens=event.tokens, id_slot=slot_of.get(index, -1),
                                 completion_probabilities=[
                                     probability_msg(rt.model.vocab, p) for p in event.probs])
                if event.timings is not None:
                    msg.timings.CopyFrom(timings_msg(event.timings))
                yield msg
            elif isinstance(event, Finished):
                yield _final_chunk(rt, gen_id, index, event, slot_of, settings, prompts)
            elif isinstance(event, Failed):
                failure = ServiceError(event.code, event.message)
                yield chunk_type(id=gen_id, index=index, stop=True,
                                 error=error_msg(event.code, event.message))
        if failure is not None:
            await self._abort(context, failure)

    async def _aggregate(self, rt: Runtime, gen_id: str, prompts: list[list[int]],
                         params: CompletionParams, chunk_type: Any,
                         context: grpc.aio.ServicerContext,
                         arrival: Arrival) -> AsyncIterator[Any]:
        """stream=false: one message per prompt, with the whole content, tokens and probs."""
        acc: dict[int, Any] = {}
        settings = generation_settings(params, rt.engine.n_ctx_slot, rt.model_name, False)
        failure: ServiceError | None = None
        slot_of: dict[int, int] = {}
        async for index, event in run_generation(rt.engine, self._registry, gen_id, prompts,
                                                 params, arrival):
            part = acc.setdefault(index, chunk_type(id=gen_id, index=index))
            if isinstance(event, Started):
                slot_of[index] = event.slot_id
            elif isinstance(event, Chunk):
                part.tokens.extend(event.tokens)
                part.completion_probabilities.extend(
                    probability_msg(rt.model.vocab, p) for p in event.probs)
            elif isinstance(event, Finished):
                final = _final_chunk(rt, gen_id, index, event, slot_of, settings, prompts)
                final.content = event.content
                if params.return_tokens:  # streams always carry ids; a whole answer on request
                    final.tokens.extend(part.tokens)
                final.completion_probabilities.extend(part.completion_probabilities)
                acc[index] = final
            elif isinstance(event, Failed):
                failure = ServiceError(event.code, event.message)
                part.stop = True
                part.error.CopyFrom(error_msg(event.code, event.message))
        for index in sorted(acc):
            yield acc[index]
        if failure is not None:
            await self._abort(context, failure)

    @_generation_rpc
    async def OpenAICompletion(self, request: Any, context: grpc.aio.ServicerContext,
                               arrival: Arrival) -> AsyncIterator[Any]:
        gen_id = new_request_id("cmpl")
        created = int(time.time())
        if request.HasField("logprobs") and not request.HasField("n_probs"):
            request.n_probs = request.logprobs  # OpenAI's name for the same thing
        refused = _openai_refusal(request)
        if refused:  # OpenAI options llama-server refuses on this route
            await self._abort(context, ServiceError("invalid_argument", refused))
            return
        async for msg in self._completion_stream(request, context, gen_id,
                                                 completion_pb2.CompletionChunk, arrival):
            rt = self._runtime()
            model = rt.model_name if rt else ""
            out = completion_pb2.OpenAICompletionChunk(
                id=gen_id, object="text_completion", created=created, model=model)
            if msg.HasField("error"):
                out.error.CopyFrom(msg.error)
                yield out
                continue
            choice = out.choices.add(index=msg.index, text=msg.content, tokens=msg.tokens)
            if msg.stop:
                choice.finish_reason = _FINISH_REASON.get(msg.stop_type, "stop")
                _copy_final_fields(msg, out)
            if msg.completion_probabilities:
                choice.logprobs.content.extend(msg.completion_probabilities)
            yield out

    @_generation_rpc
    async def ChatCompletion(self, request: Any, context: grpc.aio.ServicerContext,
                             arrival: Arrival) -> AsyncIterator[Any]:
        gen_id = new_request_id("chatcmpl")
        created = int(time.time())
        try:
            rt = self._rt()
            prompt = self._render_chat(rt, request)
            format_grammar = schema_grammar(request) if request.HasField(
                "response_format") else None
        except ValueError as e:  # a response_format schema we cannot turn into a grammar
            await self._abort(context, ServiceError("invalid_argument", str(e)))
            return
        except ServiceError as e:
            await self._abort(context, e)  # nothing sent yet: the status alone is visible
            return
        # Reuse the completion path with the rendered prompt; translate its messages.
        creq = completion_pb2.CompletionRequest()
        _copy_common_fields(request, creq)
        creq.prompt.string_value = prompt
        if format_grammar is not None and not creq.HasField("grammar"):
            creq.grammar = format_grammar
        if request.HasField("max_completion_tokens") and not request.HasField("n_predict"):
            creq.n_predict = request.max_completion_tokens
        if request.logprobs and not request.HasField("n_probs"):
            creq.n_probs = max(request.top_logprobs, 1) if request.HasField(
                "top_logprobs") else 1
        first = True
        async for msg in self._completion_stream(creq, context, gen_id,
                                                 completion_pb2.CompletionChunk, arrival):
            out = chat_pb2.ChatCompletionChunk(
                id=gen_id, object="chat.completion.chunk" if request.stream else
                "chat.completion", created=created, model=rt.model_name)
            if msg.HasField("error"):
                out.error.CopyFrom(msg.error)
                yield out
                continue
            choice = out.choices.add(index=msg.index, tokens=msg.tokens)
            if not request.stream:
                choice.message.role = "assistant"
                choice.message.content = msg.content
            elif first:
                choice.delta.role = "assistant"
                first = False
            if request.stream and msg.content:
                choice.delta.content = msg.content
            if msg.completion_probabilities:
                choice.logprobs.content.extend(msg.completion_probabilities)
            if msg.stop:
                choice.finish_reason = _FINISH_REASON.get(msg.stop_type, "stop")
                _copy_final_fields(msg, out)
            yield out

    def _render_chat(self, rt: Runtime, request: Any) -> str:
        messages = [json_format.MessageToDict(m, preserving_proto_field_name=True)
                    for m in request.messages]
        for m, raw in zip(messages, request.messages, strict=True):
            if raw.HasField("content_parts"):
                m["content"] = m.pop("content_parts").get("parts", [])
        tools = [json_format.MessageToDict(t, preserving_proto_field_name=True)
                 for t in request.tools] or None
        kwargs = (json_format.MessageToDict(request.chat_template_kwargs)
                  if request.HasField("chat_template_kwargs") else {})
        add_gen = request.add_generation_prompt if request.HasField(
            "add_generation_prompt") else True
        if not messages:
            raise ServiceError("invalid_argument", "messages must not be empty")
        # llama-server's prefill: a trailing assistant message is continued, not closed.
        prefill = (rt.config.chat.prefill_assistant and messages[-1].get("role") == "assistant")
        try:
            template = rt.templates.for_request(tools)
            return template.render(messages, add_generation_prompt=add_gen and not prefill,
                                   continue_final_message=prefill, tools=tools,
                                   extra_context={**dict(rt.config.chat.template_kwargs),
                                                  **kwargs})
        except (TemplateError, ValueError) as e:
            raise ServiceError("invalid_argument", str(e)) from e

    async def ApplyTemplate(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return chat_pb2.ApplyTemplateResponse(prompt=self._render_chat(self._rt(), request))
        except ServiceError as e:
            await self._abort(context, e)

    # -- tokens -----------------------------------------------------------------------------
    async def Tokenize(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            vocab = self._rt().model.vocab
            parse_special = request.parse_special if request.HasField("parse_special") else True
            tokens = vocab.tokenize(request.content, add_special=request.add_special,
                                    parse_special=parse_special)
        except ServiceError as e:
            await self._abort(context, e)
        resp = tokenize_pb2.TokenizeResponse(tokens=tokens)
        if request.with_pieces:
            for t in tokens:
                piece = vocab.token_to_piece(t, special=True)
                try:
                    resp.pieces.add(id=t, piece=piece.decode("utf-8"))
                except UnicodeDecodeError:
                    resp.pieces.add(id=t, piece_bytes=piece)
        return resp

    async def Detokenize(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            vocab = self._rt().model.vocab
            text = vocab.detokenize(list(request.tokens))
        except ServiceError as e:
            await self._abort(context, e)
        except (LlamaError, ValueError) as e:
            await self._abort(context, ServiceError("invalid_argument", str(e)))
        return tokenize_pb2.DetokenizeResponse(content=text.decode("utf-8", "replace"))

    # -- server -----------------------------------------------------------------------------
    async def GetProps(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            rt = self._rt()
        except ServiceError as e:
            await self._abort(context, e)
        vocab = rt.model.vocab
        settings = generation_settings(rt.defaults, rt.engine.n_ctx_slot, rt.model_name)
        resp = server_pb2.PropsResponse(
            total_slots=rt.n_slots, model_path=rt.config.model.path,
            chat_template=rt.templates.default.source, build_info=self._build_info,
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

    async def ListModels(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            rt = self._rt()
        except ServiceError as e:
            await self._abort(context, e)
        m = rt.model
        info = server_pb2.ModelInfo(id=rt.model_name, object="model", created=rt.created,
                                    owned_by="llamacpp",
                                    aliases=list(rt.config.model.aliases))
        info.meta.vocab_type = m.vocab.type
        info.meta.n_vocab = m.vocab.n_tokens
        info.meta.n_ctx_train = m.n_ctx_train
        info.meta.n_embd = m.n_embd
        info.meta.n_params = m.n_params
        info.meta.size = m.size
        return server_pb2.ListModelsResponse(object="list", data=[info])

    async def Cancel(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            rt = self._rt()
        except ServiceError as e:
            await self._abort(context, e)
        return server_pb2.CancelResponse(
            found=cancel_generation(rt.engine, self._registry, request.id))


def _openai_refusal(request: Any) -> str:
    """Why llama-server's /v1/completions refuses this request ("" if it does not)."""
    if request.echo:
        return "Only no echo is supported"
    for name in ("best_of", "suffix"):
        if request.HasField(name):
            return f"Unsupported param: {name}"
    return ""


def _final_chunk(rt: Runtime, gen_id: str, index: int, fin: Finished, slot_of: dict[int, int],
                 settings: Any, prompts: list[list[int]]) -> Any:
    """A prompt's final message, with the processed prompt as text (llama-server's `prompt`)."""
    prompt_text = rt.model.vocab.detokenize(prompts[index]).decode("utf-8", "replace")
    return final_completion_chunk(gen_id, index, fin, slot_of.get(index, -1), settings,
                                  rt.model_name, prompt_text)


def _copy_final_fields(final: Any, out: Any) -> None:
    """The OpenAI chunks' copy of a final CompletionChunk's usage, timings and stop details."""
    out.usage.CopyFrom(final.usage)
    out.timings.CopyFrom(final.timings)
    out.stop_type, out.stopping_word = final.stop_type, final.stopping_word
    out.truncated, out.tokens_cached = final.truncated, final.tokens_cached
    out.tokens_evaluated = final.tokens_evaluated


def _copy_common_fields(src: Any, dst: Any) -> None:
    """Copy the sampling/generation fields both request messages share (same names)."""
    names = {f.name for f in dst.DESCRIPTOR.fields}
    for field, value in src.ListFields():
        if field.name in names and field.name not in ("prompt", "typed_prompt"):
            target = dst.DESCRIPTOR.fields_by_name[field.name]
            if target.type != field.type:
                continue
            if field.is_repeated:
                getattr(dst, field.name).extend(value)
            elif field.message_type is not None:
                getattr(dst, field.name).CopyFrom(value)
            else:
                setattr(dst, field.name, value)


__all__ = ["ERROR_KINDS", "LlamaServicer"]
