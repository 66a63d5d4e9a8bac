"""The llama.v1.LlamaServer servicer: each RPC converts, calls the engine, converts back.

Every unary method is wrapped by `rpc_errors.unary`, and the generation RPCs share one loop
(`_generate`) that applies `rpc_errors.abort`: any exception is mapped to its status in one
place (docs/api.md, "Errors"). Request preparation (templates,
tokenizing, schemas, grammars) runs off the event loop for anything but small requests
(service.offload). The streaming contract is in service.streams.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from llama.v1 import chat_pb2, server_pb2, service_pb2_grpc

from service.chat_render import render_chat
from service.chat_stream import chat_shaper, make_stream
from service.embeddings import check_generation
from service.engine.arrival import Arrival
from service.engine.events import Finished
from service.generation import (
    Generation,
    cancel_generation,
    running,
)
from service.generation_request import (
    GenerationRequest,
    build_chat,
    build_completion,
    build_infill,
    build_openai_completion,
    generation_id,
    make_tasks,
)
from service.media_request import check_request_media
from service.rpc_adapters import AdapterRpcs
from service.rpc_base import Context, ServicerBase
from service.rpc_chat_control import ChatControlRpcs
from service.rpc_embedding import EmbeddingServicer
from service.rpc_errors import abort, check_decoded, unary
from service.rpc_operations import OperationsRpcs
from service.rpc_server_info import ServerInfoRpcs
from service.rpc_slot_files import SlotFileRpcs
from service.runtime import Runtime
from service.server_info import load_response, models_response, props_response
from service.streams import openai_chunk
from service.tokens import detokenize, prompt_text, tokenize

Builder = Callable[[Runtime, Any, str], GenerationRequest]
Shaper = Callable[[Runtime, GenerationRequest], Callable[[Any], Any]]
REQUEST_ID_HEADER = "x-request-id"  # initial metadata: the generation's id
# Prompts up to this many tokens are turned back into text on the event loop (~0.1 ms).
_INLINE_DETOKENIZE = 2048


# One base class per group of RPCs (service/rpc_base.py says how they fit together).
class LlamaServicer(ChatControlRpcs, OperationsRpcs, AdapterRpcs, SlotFileRpcs,
                    EmbeddingServicer, ServerInfoRpcs, ServicerBase,
                    service_pb2_grpc.LlamaServerServicer):  # type: ignore[misc]

    # -- generation -------------------------------------------------------------------------
    async def _generate(self, request: Any, context: Context, prefix: str, build: Builder,
                        shape: Shaper) -> AsyncIterator[Any]:
        """Build the request (off the loop unless small), run it, and yield its messages in
        the RPC's shape. The request's Arrival is open from here until the engine has its
        tasks. Every message passes through this one async generator only."""
        try:
            check_decoded(request)
            loaded = self._runtime()
            with Arrival(loaded.engine if loaded is not None else None) as arrival:
                rt = self._rt()
                check_generation(rt)
                gen = Generation(generation_id(request, prefix))

                def prepare() -> GenerationRequest:
                    check_request_media(rt, request)
                    req = build(rt, request, gen.id)
                    gen.tasks = make_tasks(rt, req, gen.sink)
                    return req

                req = await self._offload.prepare(request, prepare)
                with running(rt.engine, self._registry, gen, arrival):
                    # The id before any message: a stream = false client can Cancel by it.
                    await context.send_initial_metadata(((REQUEST_ID_HEADER, gen.id),))
                    stream, out = make_stream(rt, req), shape(rt, req)
                    while not gen.done:
                        index, events = await gen.next_events()
                        for event in events:
                            text = (await self._prompt_text(rt, req.prompt_of(index))
                                    if isinstance(event, Finished) else "")
                            msg = stream.on_event(index, event, text)
                            if msg is not None:
                                yield out(msg)
                    for msg in stream.aggregated():
                        yield out(msg)
                    if stream.failure is not None:
                        raise stream.failure
        except grpc.aio.AbortError:
            raise
        except Exception as e:  # mapped to a status: never UNKNOWN
            await abort(context, e)

    async def _prompt_text(self, rt: Runtime, tokens: list[int]) -> str:
        if len(tokens) <= _INLINE_DETOKENIZE:
            return prompt_text(rt.model.vocab, tokens)
        return await self._offload.run(prompt_text, rt.model.vocab, tokens)

    def Completion(self, request: Any, context: Context) -> AsyncIterator[Any]:
        return self._generate(request, context, "cmpl", build_completion, _as_is)

    def OpenAICompletion(self, request: Any, context: Context) -> AsyncIterator[Any]:
        return self._generate(request, context, "cmpl", build_openai_completion, _openai)

    def Infill(self, request: Any, context: Context) -> AsyncIterator[Any]:
        return self._generate(request, context, "cmpl", build_infill, _as_is)

    def ChatCompletion(self, request: Any, context: Context) -> AsyncIterator[Any]:
        return self._generate(request, context, "chatcmpl", build_chat, chat_shaper)

    @unary
    async def ApplyTemplate(self, request: Any, context: Context) -> Any:
        rt = self._rt()
        prompt = await self._offload.prepare(request, _render_checked, rt, request)
        return chat_pb2.ApplyTemplateResponse(prompt=prompt)

    # -- tokens -----------------------------------------------------------------------------
    @unary
    async def Tokenize(self, request: Any, context: Context) -> Any:
        return await self._offload.prepare(request, tokenize, self._rt().model.vocab, request)

    @unary
    async def Detokenize(self, request: Any, context: Context) -> Any:
        return await self._offload.prepare(request, detokenize, self._rt().model.vocab, request)

    # -- server -----------------------------------------------------------------------------
    @unary
    async def GetProps(self, request: Any, context: Context) -> Any:
        return props_response(self._rt(), self._build_info)

    @unary
    async def ListModels(self, request: Any, context: Context) -> Any:
        return models_response(self._rt())

    @unary
    async def GetLoad(self, request: Any, context: Context) -> Any:
        load = await asyncio.wrap_future(self._rt().engine.load())
        return load_response(load)

    @unary
    async def Cancel(self, request: Any, context: Context) -> Any:
        found = cancel_generation(self._rt().engine, self._registry, request.id)
        return server_pb2.CancelResponse(found=found)


def _render_checked(rt: Runtime, request: Any) -> str:
    """ApplyTemplate's prompt, its media checked first (decoding them is not loop work)."""
    check_request_media(rt, request)
    return render_chat(rt, request)


# The three generation RPCs' shapes: CompletionChunk -> the RPC's message.
def _as_is(rt: Runtime, req: GenerationRequest) -> Callable[[Any], Any]:
    return lambda msg: msg


def _openai(rt: Runtime, req: GenerationRequest) -> Callable[[Any], Any]:
    created = int(time.time())
    return lambda msg: openai_chunk(msg, created, rt.model_name)
