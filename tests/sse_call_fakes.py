"""A gRPC call's messages as a plain async iterator, for the tests of the SSE writers (the
service's for Envoy, the bridge's): the typed chunks, an optional pause before each, and an
exception raised where the stream would fail."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from llama.v1 import completion_pb2


async def messages(*items: Any, pause: float = 0.0) -> AsyncIterator[Any]:
    for item in items:
        if pause:
            await asyncio.sleep(pause)
        if isinstance(item, BaseException):
            raise item
        yield item


def chunk(content: str, stop: bool = False) -> Any:
    return completion_pb2.CompletionChunk(content=content, stop=stop,
                                          tokens=[1] if content else [])
