"""Request preparation off the event loop: tokenizing, template rendering, JSON-schema and
grammar work, detokenizing long prompts run on a small thread pool (libllama's calls release
the GIL), so one large request never stalls the other streams. Small requests are prepared
inline: a hand-off to the pool costs more than they do."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
# Serialized request size up to which preparation runs inline (~4k tokens of text or 1.5k token
# ids); anything with a grammar, schema or tools goes to the pool whatever its size.
INLINE_MAX_BYTES = 16 << 10
_HEAVY_FIELDS = ("grammar", "json_schema", "json_schema_json", "response_format", "tools")
# The workers' stacks: libllama's grammar parser recurses once per nesting level of a grammar
# (service/grammar_limits.py bounds the depth; this leaves a wide margin).
WORKER_STACK_BYTES = 256 << 20


class _BigStackPool(ThreadPoolExecutor):
    def _adjust_thread_count(self) -> None:  # where the pool starts its threads
        previous = threading.stack_size(WORKER_STACK_BYTES)
        try:
            super()._adjust_thread_count()  # type: ignore[misc, unused-ignore]
        finally:
            threading.stack_size(previous)


class Offload:
    def __init__(self, workers: int = 4) -> None:
        self._pool = _BigStackPool(workers, thread_name_prefix="prepare")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args))

    async def prepare(self, request: Any, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args), inline for a small request, else on the pool."""
        if is_small(request):
            return fn(*args)
        return await self.run(fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def is_small(request: Any) -> bool:
    if request.ByteSize() > INLINE_MAX_BYTES:
        return False
    repeated, single = _heavy_fields(request.DESCRIPTOR)
    return (not any(getattr(request, name) for name in repeated)
            and not any(request.HasField(name) for name in single))


@functools.cache
def _heavy_fields(descriptor: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The message type's heavy fields: (repeated ones, ones with presence)."""
    fields = [descriptor.fields_by_name[n] for n in _HEAVY_FIELDS
              if n in descriptor.fields_by_name]
    return (tuple(f.name for f in fields if f.is_repeated),
            tuple(f.name for f in fields if not f.is_repeated))
