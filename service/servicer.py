"""The llama.v1.LlamaServer servicer: each RPC converts, calls the engine, converts back.

Every method is wrapped by `rpc_errors.unary` or `rpc_errors.streaming`, which map any
exception to its status in one place (docs/api.md, "Errors"). Request preparation (templates,
tokenizing, schemas, grammars) runs off the event loop for anything but small requests
(service.offload). The streaming contract is in service.streams.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeAlias

import grpc
from llama.v1 import chat_pb2, server_pb2, service_pb2_grpc

from service.chat_render import render_chat
from service.engine.arrival import Arrival
from service.errors import ServiceError
from service.generation import (
    Generation,
    GenerationRegistry,
    cancel_generation,
    new_request_id,
    run_generation,
)
from service.generation_request import (
    GenerationRequest,
    build_chat,
    build_completion,
    build_openai_completion,
    make_tasks,
)
from service.offload import Offload
from service.rpc_errors import streaming, unary
from service.runtime import Runtime
from service.server_info import load_response, models_response, props_response
from service.streams import chat_chunk, completion_chunks, openai_chunk
from service.tokens import detokenize, prompt_text, tokenize

RuntimeGetter = Callable[[], Runtime | None]
Builder = Callable[[Runtime, Any, str], GenerationRequest]
Context: TypeAlias = grpc.aio.ServicerContext
# Prompts up to this many tokens are turned back into text on the event loop (~0.1 ms).
_INLINE_DETOKENIZE = 2048


class LlamaServicer(service_pb2_grpc.LlamaServerServicer):  # type: ignore[misc]
    def __init__(self, runtime: RuntimeGetter, build_info: str = "") -> None:
        self._runtime = runtime
        self._registry = GenerationRegistry()
        self._build_info = build_info
        self._offload = Offload()

    def _rt(self) -> Runtime:
        rt = self._runtime()
        if rt is None:
            raise ServiceError("unavailable", "Loading model")
        return rt

    # -- generation -------------------------------------------------------------------------
    async def _generate(self, request: Any, prefix: str,
                        build: Builder) -> AsyncIterator[tuple[Runtime, GenerationRequest, Any]]:
        """Build the request (off the loop unless small), run it, and yield CompletionChunks.
        The request's Arrival is open from here until the engine has its tasks."""
        loaded = self._runtime()
        with Arrival(loaded.engine if loaded is not None else None) as arrival:
            rt = self._rt()
            gen = Generation(new_request_id(prefix))

            def prepare() -> GenerationRequest:
                req = build(rt, request, gen.id)
                gen.tasks = make_tasks(rt, req, gen.sink)
                return req

            req = await self._offload.prepare(request, prepare)
            events = run_generation(rt.engine, self._registry, gen, arrival)
            async for msg in completion_chunks(rt, req, events, self._prompt_text_of(rt)):
                yield rt, req, msg

    def _prompt_text_of(self, rt: Runtime) -> Callable[[list[int]], Any]:
        async def text(tokens: list[int]) -> str:
            if len(tokens) <= _INLINE_DETOKENIZE:
                return prompt_text(rt.model.vocab, tokens)
            return await self._offload.run(prompt_text, rt.model.vocab, tokens)

        return text

    @streaming
    async def Completion(self, request: Any, context: Context) -> AsyncIterator[Any]:
        async for _, _, msg in self._generate(request, "cmpl", build_completion):
            yield msg

    @streaming
    async def OpenAICompletion(self, request: Any, context: Context) -> AsyncIterator[Any]:
        created = int(time.time())
        async for rt, _, msg in self._generate(request, "cmpl", build_openai_completion):
            yield openai_chunk(msg, created, rt.model_name)

    @streaming
    async def ChatCompletion(self, request: Any, context: Context) -> AsyncIterator[Any]:
        created, first = int(time.time()), True
        async for rt, req, msg in self._generate(request, "chatcmpl", build_chat):
            yield chat_chunk(msg, created, rt.model_name, req.stream, first)
            first = first and msg.HasField("error")

    @unary
    async def ApplyTemplate(self, request: Any, context: Context) -> Any:
        rt = self._rt()
        prompt = await self._offload.prepare(request, render_chat, rt, request)
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
