"""The parsing half of a parsed chat answer (service.chat_stream has the rest): each task's
sink parses its events' text on the engine thread, off the event loop. The engine calls
`transform` on a step's events before handing them to the request's loop."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from service.chat_parse import ChatParseConfig, ChatParser
from service.chat_parse_core import ChatDelta, ParsedMessage
from service.engine.events import Chunk, Event, Finished

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParsedChunk(Chunk):
    delta: ChatDelta | None = None


@dataclass(frozen=True)
class ParsedFinished(Finished):
    delta: ChatDelta | None = None  # what finishing released
    message: ParsedMessage | None = None  # the whole answer


class ChatParsingSink:
    """Wraps a task's sink (a QueueSink on the request's event loop): its events' text is
    parsed by `transform`, which the engine calls on its own thread."""

    def __init__(self, inner: Any, config: ChatParseConfig) -> None:
        self.inner, self.loop = inner, inner.loop
        self.parser = ChatParser(config)

    def transform(self, events: list[Event]) -> list[Event]:
        try:
            return [self._parsed(e) for e in events]
        except Exception:  # a parser bug must not cost the answer: its text goes unparsed
            _log.exception("chat parsing failed; the answer goes on unparsed")
            return events

    def _parsed(self, event: Event) -> Event:
        if isinstance(event, Chunk) and not isinstance(event, ParsedChunk):
            return ParsedChunk(**_fields(event), delta=self.parser.feed(event.text))
        if isinstance(event, Finished) and not isinstance(event, ParsedFinished):
            delta = self.parser.finish()
            return ParsedFinished(**_fields(event), delta=delta, message=self.parser.message)
        return event

    def __call__(self, events: list[Event]) -> None:
        self.inner(self.transform(events))

    def deliver_local(self, events: list[Event]) -> None:
        self.inner.deliver_local(events)


_NAMES: dict[type, tuple[str, ...]] = {}


def _fields(event: Any) -> dict[str, Any]:
    """The event's fields by name (whatever fields another part of the engine adds)."""
    names = _NAMES.get(type(event))
    if names is None:
        names = _NAMES[type(event)] = tuple(type(event).__dataclass_fields__)
    return {f: getattr(event, f) for f in names}


def parsing_sink(sink: Any, config: ChatParseConfig | None) -> Any:
    """A task's sink, parsing the chat answer when `config` asks for it."""
    if config is None or not config.active:
        return sink
    return ChatParsingSink(sink, config)
