"""A chat answer parsed while it streams: reasoning, content and tool calls as OpenAI deltas.

Parsing runs in each task's sink on the engine thread, off the event loop (the engine calls
`ChatParsingSink.transform` on a step's events before handing them to the loop; each piece of
text is parsed once, incrementally: service.chat_parse). The parsed pieces ride on the events
(`ParsedChunk`, `ParsedFinished`); `ChatStream` carries them next to the CompletionChunk it
makes, and `chat_shaper` writes the ChatCompletionChunk:

- a call's first delta carries index, id, type, function.name and arguments "", later deltas
  only argument pieces of that index;
- the whole message (stream = false) has `tool_calls`, `content` unset (JSON null) when the
  answer is only calls, `reasoning_content`; finish_reason "tool_calls" when calls were made
  and generation stopped by itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from service.chat_parse_core import ChatDelta, ParsedMessage
from service.chat_sink import ParsedChunk, ParsedFinished
from service.engine.events import Event
from service.generation_request import GenerationRequest
from service.runtime import Runtime
from service.streams import CompletionStream, chat_chunk
from service.typed_outputs import set_finish_reason


@dataclass
class ChatPart:
    """A CompletionChunk and the parsed answer pieces that go with it."""

    msg: Any
    delta: ChatDelta | None = None
    message: ParsedMessage | None = None


class ChatStream(CompletionStream):
    """CompletionStream for a parsed chat: its messages come as ChatParts."""

    def __init__(self, rt: Runtime, req: GenerationRequest) -> None:
        super().__init__(rt, req)
        self.whole: dict[int, ParsedMessage] = {}
        self.deltas: dict[int, ParsedMessage] = {}  # events that carried no parse

    def on_event(self, index: int, event: Event, prompt_text: str = "") -> Any | None:
        msg = super().on_event(index, event, prompt_text)
        if isinstance(event, ParsedFinished) and event.message is not None:
            self.whole[index] = event.message
        if msg is None:
            return None
        if isinstance(event, ParsedChunk | ParsedFinished):
            return ChatPart(msg, event.delta, self.whole.get(index))
        return ChatPart(msg)

    def aggregated(self) -> list[Any]:
        return [ChatPart(m, None, self.whole.get(m.index)) for m in super().aggregated()]


def chat_shaper(rt: Runtime, req: GenerationRequest) -> Callable[[Any], Any]:
    """The ChatCompletion RPC's message for each of ChatStream's (or CompletionStream's)."""
    created = int(time.time())
    started: set[int] = set()  # the choices whose role was sent

    def shape(part: Any) -> Any:
        if not isinstance(part, ChatPart):
            part = ChatPart(part)
        msg = part.msg
        # Each choice's first delta carries the role (OpenAI's, for every index of n).
        out = chat_chunk(msg, created, rt.model_name, req.stream, msg.index not in started)
        if not msg.HasField("error"):
            started.add(msg.index)
        if out.HasField("error") or req.chat is None or not req.chat.parse.active:
            return out
        choice = out.choices[0]
        if req.stream:
            _delta(choice.delta, part.delta)
        elif part.message is not None:
            _message(choice.message, part.message)
        if msg.stop and part.message is not None and part.message.tool_calls \
                and msg.stop_type in ("eos", "word"):
            set_finish_reason(choice, "tool_calls")
        return out

    return shape


def _delta(out: Any, delta: ChatDelta | None) -> None:
    out.ClearField("content")
    if delta is None:
        return
    if delta.content:
        out.content = delta.content
    if delta.reasoning:
        out.reasoning_content = delta.reasoning
    for piece in delta.tool_calls:
        if piece.id:  # a call's first delta names it, with arguments "" (as OpenAI's)
            tc = out.tool_calls.add(index=piece.index, id=piece.id, type="function")
            tc.function.name = piece.name
        if piece.arguments:
            out.tool_calls.add(index=piece.index).function.arguments = piece.arguments


def _message(out: Any, message: ParsedMessage) -> None:
    out.content = message.content
    if message.tool_calls and not message.content:
        out.ClearField("content")
    if message.reasoning:
        out.reasoning_content = message.reasoning
    for call in message.tool_calls:
        tc = out.tool_calls.add(id=call.id, type="function")
        tc.function.name, tc.function.arguments = call.name, call.arguments


def make_stream(rt: Runtime, req: GenerationRequest) -> CompletionStream:
    """The stream object for a generation request: a ChatStream for a parsed chat."""
    if req.chat is not None and req.chat.parse.active:
        return ChatStream(rt, req)
    return CompletionStream(rt, req)
