"""Engine events -> the messages of the generation RPCs.

Streaming contract (docs/api.md): a request rejected before its first message gets a status only
(INVALID_ARGUMENT, UNAVAILABLE...), which a transcoding proxy can still turn into an HTTP error.
Once messages have flowed, every generation ends with a final message that says how it ended
(stop info, or `error`) before the status, because a client behind a transcoding proxy cannot
see trailers then. With `stream: false` each prompt yields exactly one, aggregated, message.

`completion_chunks` makes llama-server's /completion messages; the OpenAI completion and chat
shapes are made from those (`openai_chunk`, `chat_chunk`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from llama.v1 import chat_pb2, completion_pb2

from service.engine.events import Chunk, Event, Failed, Finished, Started
from service.errors import ServiceError
from service.generation_request import GenerationRequest
from service.messages import (
    error_msg,
    final_completion_chunk,
    generation_settings,
    probability_msg,
    timings_msg,
)
from service.runtime import Runtime

FINISH_REASON = {"eos": "stop", "word": "stop", "limit": "length"}
Events = AsyncIterator[tuple[int, Event]]
PromptText = Callable[[list[int]], Awaitable[str]]


async def completion_chunks(rt: Runtime, req: GenerationRequest, events: Events,
                            prompt_text: PromptText) -> AsyncIterator[Any]:
    """CompletionChunks for the request's events; raises ServiceError after the in-band error
    message of a failed generation (the RPC's status)."""
    settings = generation_settings(req.params, rt.engine.n_ctx_slot, rt.model_name, req.stream)
    parts: dict[int, Any] = {}
    slot_of: dict[int, int] = {}
    failure: ServiceError | None = None
    async for index, event in events:
        part = parts.setdefault(index, completion_pb2.CompletionChunk(id=req.id, index=index))
        if isinstance(event, Started):
            slot_of[index] = event.slot_id
            if req.stream:
                yield completion_pb2.CompletionChunk(id=req.id, index=index, id_slot=event.slot_id)
        elif isinstance(event, Chunk):
            msg = _content_chunk(rt, req, index, event, slot_of.get(index, -1))
            if req.stream:
                yield msg
            else:
                part.tokens.extend(msg.tokens)
                part.completion_probabilities.extend(msg.completion_probabilities)
        elif isinstance(event, Finished):
            final = final_completion_chunk(
                req.id, index, event, slot_of.get(index, -1), settings, rt.model_name,
                await prompt_text(req.prompts[index]))
            if req.stream:
                yield final
                continue
            final.content = event.content
            if req.params.return_tokens:  # streams always carry ids; a whole answer on request
                final.tokens.extend(part.tokens)
            final.completion_probabilities.extend(part.completion_probabilities)
            parts[index] = final
        elif isinstance(event, Failed):
            failure = ServiceError(event.code, event.message)
            if req.stream:
                yield completion_pb2.CompletionChunk(id=req.id, index=index, stop=True,
                                                     error=error_msg(event.code, event.message))
            else:
                part.stop = True
                part.error.CopyFrom(error_msg(event.code, event.message))
    if not req.stream:
        for index in sorted(parts):
            yield parts[index]
    if failure is not None:
        raise failure


def _content_chunk(rt: Runtime, req: GenerationRequest, index: int, event: Chunk,
                   slot: int) -> Any:
    msg = completion_pb2.CompletionChunk(
        id=req.id, index=index, content=event.text, tokens=event.tokens, id_slot=slot,
        completion_probabilities=[probability_msg(rt.model.vocab, p) for p in event.probs])
    if event.timings is not None:
        msg.timings.CopyFrom(timings_msg(event.timings))
    return msg


def openai_chunk(msg: Any, created: int, model: str) -> Any:
    """An OpenAI /v1/completions message from a CompletionChunk."""
    out = completion_pb2.OpenAICompletionChunk(id=msg.id, object="text_completion",
                                               created=created, model=model)
    if msg.HasField("error"):
        out.error.CopyFrom(msg.error)
        return out
    choice = out.choices.add(index=msg.index, text=msg.content, tokens=msg.tokens)
    if msg.stop:
        choice.finish_reason = FINISH_REASON.get(msg.stop_type, "stop")
        copy_final_fields(msg, out)
    if msg.completion_probabilities:
        choice.logprobs.content.extend(msg.completion_probabilities)
    return out


def chat_chunk(msg: Any, created: int, model: str, stream: bool, first: bool) -> Any:
    """An OpenAI chat message from a CompletionChunk (`first`: the stream's first message,
    which carries the assistant role)."""
    out = chat_pb2.ChatCompletionChunk(
        id=msg.id, object="chat.completion.chunk" if stream else "chat.completion",
        created=created, model=model)
    if msg.HasField("error"):
        out.error.CopyFrom(msg.error)
        return out
    choice = out.choices.add(index=msg.index, tokens=msg.tokens)
    if not stream:
        choice.message.role = "assistant"
        choice.message.content = msg.content
    elif first:
        choice.delta.role = "assistant"
    if stream and msg.content:
        choice.delta.content = msg.content
    if msg.completion_probabilities:
        choice.logprobs.content.extend(msg.completion_probabilities)
    if msg.stop:
        choice.finish_reason = FINISH_REASON.get(msg.stop_type, "stop")
        copy_final_fields(msg, out)
    return out


def copy_final_fields(final: Any, out: Any) -> None:
    """The OpenAI chunks' copy of a final CompletionChunk's usage, timings and stop details."""
    out.usage.CopyFrom(final.usage)
    out.timings.CopyFrom(final.timings)
    out.stop_type, out.stopping_word = final.stop_type, final.stopping_word
    out.truncated, out.tokens_cached = final.truncated, final.tokens_cached
    out.tokens_evaluated = final.tokens_evaluated
