"""The embedding and rerank RPCs: Embed (POST /embedding, /embeddings), OpenAIEmbed
(/v1/embeddings) and Rerank (/reranking and its aliases). Request handling is in
service.embeddings; here each RPC reads its inputs (off the event loop unless small), runs one
engine task per input and answers once every input has its result."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from service.embeddings import (
    check_embeddings,
    check_reranking,
    embed_job,
    embed_response,
    make_tasks,
    openai_response,
    rerank_prompts,
    rerank_response,
)
from service.engine.arrival import Arrival
from service.engine.events import Embedded, Failed
from service.engine.media import MediaSpan
from service.errors import ServiceError
from service.generation import Generation, new_request_id, running
from service.rpc_base import Context, ServicerBase
from service.rpc_errors import unary
from service.runtime import Runtime


class EmbeddingServicer(ServicerBase):
    @unary
    async def Embed(self, request: Any, context: Context) -> Any:
        rt = self._rt()
        check_embeddings(rt, oai=False)
        job = await self._offload.prepare(request, embed_job, rt, request)
        results = await self._embed(rt, job.prompts, "embd", job.media)
        return embed_response(rt, job, results)

    @unary
    async def OpenAIEmbed(self, request: Any, context: Context) -> Any:
        rt = self._rt()
        check_embeddings(rt, oai=True)
        job = await self._offload.prepare(request, embed_job, rt, request)
        results = await self._embed(rt, job.prompts, "embd", job.media)
        return openai_response(rt, request, job, results)

    @unary
    async def Rerank(self, request: Any, context: Context) -> Any:
        rt = self._rt()
        check_reranking(rt)
        prompts = await self._offload.prepare(request, rerank_prompts, rt, request)
        results = await self._embed(rt, prompts, "rerank")
        return rerank_response(rt, request, results)

    async def _embed(self, rt: Runtime, prompts: Sequence[list[int]], prefix: str,
                     media: Sequence[tuple[MediaSpan, ...]] = ()) -> list[Embedded]:
        """Every input's result, in input order; the first failure fails the request (and the
        inputs still queued or running are cancelled as it leaves)."""
        with Arrival(rt.engine) as arrival:
            gen = Generation(new_request_id(prefix))
            gen.tasks = make_tasks(rt, gen.id, prompts, gen.sink, media)
            results: list[Embedded | None] = [None] * len(prompts)
            with running(rt.engine, self._registry, gen, arrival):
                while not gen.done:
                    index, events = await gen.next_events()
                    last = events[-1]
                    if isinstance(last, Failed):
                        raise ServiceError(last.code, last.message)
                    if isinstance(last, Embedded):
                        results[index] = last
        done = [r for r in results if r is not None]
        assert len(done) == len(prompts), "every input ends with its result"
        return done
