"""The server process's event loop: uvloop's (libuv) where it is installed, which is everywhere
but Windows (a dependency), else asyncio's; `LLAMA_GRPC_EVENT_LOOP=asyncio` chooses asyncio's.

The loop turns every engine event into a gRPC message and runs every unary RPC, and the engine
thread needs the same GIL between two decodes; uvloop runs the loop's own work (polling, the
callbacks grpc.aio schedules for each completion) in C. The REST bridge already ran on it
(uvicorn picks it). Measured in docs/benchmarks.md, "The server on uvloop".
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
ENV = "LLAMA_GRPC_EVENT_LOOP"
CHOICES = ("uvloop", "asyncio")


def chosen() -> str:
    """The loop the environment asks for; ValueError names the choices for another value."""
    choice = os.environ.get(ENV, "").strip() or "uvloop"
    if choice not in CHOICES:
        raise ValueError(f"{ENV}={choice!r}: expected one of {', '.join(CHOICES)}")
    return choice


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main) on the chosen loop (asyncio's where uvloop is not installed)."""
    if chosen() == "uvloop":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)
