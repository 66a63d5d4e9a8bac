"""Engine events -> the messages of the generation RPCs.

Streaming contract (docs/api.md): a request rejected before its first message gets a status only
(INVALID_ARGUMENT, UNAVAILABLE...), which a transcoding proxy can still turn into an HTTP error.
Once messages have flowed, every generation ends with a final message that says how it ended
(stop info, or `error`) before the status, because a client behind a transcoding proxy cannot
see trailers then. With `stream: false` each prompt yields exactly one, aggregated, message.

`CompletionStream` makes llama-server's /completion messages; the OpenAI completion and chat
shapes are made from those (`openai_chunk`, `chat_chunk`).
"""

from __future__ import annotations

from typing import Any

from llama.v1 import chat_pb2, completion_pb2

from service.engine.events import Chunk, Event, Failed, Finished, Progress, Started
from service.errors import ServiceError
from service.generation_request import GenerationRequest
from service.messages import (
    final_completion_chunk,
    probability_msg,
    request_settings,
    timings_msg,
)
from service.rpc_errors import inband_error
from service.runtime import Runtime
from service.typed_outputs import set_finish_reason, set_role

FINISH_REASON = {"eos": "stop", "word": "stop", "limit": "length"}


class CompletionStream:
    """One request's engine events as CompletionChunks. A plain object, not a generator: the
    RPC's own loop is the only async generator a message passes through (each layer costs the
    event loop, which shares the GIL with the engine thread, on every message)."""

    def __init__(self, rt: Runtime, req: GenerationRequest) -> None:
        self.rt, self.req = rt, req
        self.settings = request_settings(rt, req.params, req.stream)
        self.parts: dict[int, Any] = {}  # stream = false: each prompt's message so far
        self.slot_of: dict[int, int] = {}
        # per prompt: its tokens, and the tokens generated so far (llama-server's counts on
        # every streamed message)
        self.n_prompt: dict[int, int] = {}
        self.n_predicted: dict[int, int] = {}
        self.failure: ServiceError | None = None  # the RPC's status after the messages

    def on_event(self, index: int, event: Event, prompt_text: str = "") -> Any | None:
        """The message to send now for `event` (None: nothing yet). `prompt_text`: the
        prompt as text, for a Finished event."""
        req = self.req
        if isinstance(event, Chunk):
            msg = _content_chunk(self.rt, req, index, event, self.slot_of.get(index, -1))
            if req.stream:
                self.n_predicted[index] = self.n_predicted.get(index, 0) + len(event.tokens)
                msg.tokens_predicted = self.n_predicted[index]
                msg.tokens_evaluated = self.n_prompt.get(index, 0)
                return msg
            part = self._part(index)
            part.tokens.extend(msg.tokens)
            part.completion_probabilities.extend(msg.completion_probabilities)
            return None
        if isinstance(event, Started):
            self.slot_of[index], self.n_prompt[index] = event.slot_id, event.n_prompt
            if not req.stream:
                return None
            msg = completion_pb2.CompletionChunk(id=req.id, index=index, id_slot=event.slot_id)
            if req.params.return_progress:  # llama-server's first message is then the 0% one
                _set_progress(msg, event.n_prompt, event.tokens_cached, event.tokens_cached, 0)
            return msg
        if isinstance(event, Progress):  # only sent to streams that asked (return_progress)
            msg = completion_pb2.CompletionChunk(id=req.id, index=index,
                                                 id_slot=self.slot_of.get(index, -1))
            _set_progress(msg, event.total, event.cache, event.processed, event.time_ms)
            return msg
        if isinstance(event, Finished):
            return self._final(index, event, prompt_text)
        if isinstance(event, Failed):
            self.failure = ServiceError(event.code, event.message)
            error = inband_error(self.failure)  # mirrors the status that follows
            if req.stream:
                return completion_pb2.CompletionChunk(id=req.id, index=index, stop=True,
                                                      error=error)
            part = self._part(index)
            part.stop = True
            part.error.CopyFrom(error)
        return None

    def _part(self, index: int) -> Any:
        part = self.parts.get(index)
        if part is None:
            part = self.parts[index] = completion_pb2.CompletionChunk(id=self.req.id,
                                                                      index=index)
        return part

    def _final(self, index: int, event: Finished, prompt_text: str) -> Any | None:
        final = final_completion_chunk(self.req.id, index, event, self.slot_of.get(index, -1),
                                       self.settings, self.rt.model_name, prompt_text)
        if self.req.stream:
            return final
        part = self._part(index)
        final.content = event.content
        if self.req.params.return_tokens:  # streams always carry ids; a whole answer on request
            final.tokens.extend(part.tokens)
        final.completion_probabilities.extend(part.completion_probabilities)
        self.parts[index] = final
        return None

    def aggregated(self) -> list[Any]:
        """stream = false: one message per prompt, in prompt order, once all have ended."""
        return [self.parts[i] for i in sorted(self.parts)]


def _set_progress(msg: Any, total: int, cache: int, processed: int, time_ms: float) -> None:
    p = msg.prompt_progress
    p.total, p.cache, p.processed, p.time_ms = total, cache, processed, time_ms


def _content_chunk(rt: Runtime, req: GenerationRequest, index: int, event: Chunk,
                   slot: int) -> Any:
    msg = completion_pb2.CompletionChunk(
        id=req.id, index=index, content=event.text, tokens=event.tokens, id_slot=slot)
    if event.probs:  # an empty list passed in costs ~0.3 us a token (issue 24)
        msg.completion_probabilities.extend(
            probability_msg(rt.model.vocab, p, rt.engine.settings.special,
                            req.params.keep_special) for p in event.probs)
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
    if msg.HasField("prompt_progress"):
        out.prompt_progress.CopyFrom(msg.prompt_progress)
    if msg.HasField("timings"):  # timings_per_token (the final message's: copy_final_fields)
        out.timings.CopyFrom(msg.timings)
    if msg.stop:
        set_finish_reason(choice, FINISH_REASON.get(msg.stop_type, "stop"))
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
        set_role(choice.message, "assistant")
        choice.message.content = msg.content
    elif first or msg.HasField("prompt_progress"):  # as llama-server's
        set_role(choice.delta, "assistant")
    if stream:  # every streamed choice has a delta, if only {} (OpenAI's last chunk has one)
        choice.delta.SetInParent()
        if msg.content:
            choice.delta.content = msg.content
    if msg.HasField("prompt_progress"):
        out.prompt_progress.CopyFrom(msg.prompt_progress)
    if msg.HasField("timings"):  # as in openai_chunk
        out.timings.CopyFrom(msg.timings)
    if msg.completion_probabilities:
        choice.logprobs.content.extend(msg.completion_probabilities)
    if msg.stop:
        set_finish_reason(choice, FINISH_REASON.get(msg.stop_type, "stop"))
        copy_final_fields(msg, out)
    return out


def copy_final_fields(final: Any, out: Any) -> None:
    """The OpenAI chunks' copy of a final CompletionChunk's usage, timings and stop details."""
    out.usage.CopyFrom(final.usage)
    out.timings.CopyFrom(final.timings)
    out.stop_type, out.stopping_word = final.stop_type, final.stopping_word
    if final.HasField("typed_stop_type"):
        out.typed_stop_type = final.typed_stop_type
    out.truncated, out.tokens_cached = final.truncated, final.tokens_cached
    out.tokens_evaluated = final.tokens_evaluated
