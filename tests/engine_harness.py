"""The engine on a real model and context, without the service around it, for the engine's
tests: a running Engine, greedy one-token parameters, and a sink that records a request's
events until it ends."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import native
from native.context import ContextParams
from service.engine.engine import Engine, EngineSettings
from service.engine.events import Event, Failed, Finished
from service.engine.params import CompletionParams, SamplingParams

GREEDY_ONE = CompletionParams(n_predict=1, sampling=SamplingParams(temperature=0.0))


@contextmanager
def running_engine(model_path: Path, n_ctx: int, n_seq_max: int,
                   settings: EngineSettings | None = None) -> Iterator[Engine]:
    """A started Engine over `model_path` (one thread, so that runs are reproducible); stopped
    and its model and context freed afterwards."""
    model = native.Model(model_path)
    ctx = native.Context(model, ContextParams(n_ctx=n_ctx, n_seq_max=n_seq_max, n_threads=1,
                                              n_threads_batch=1))
    eng = Engine(model, ctx, settings)
    eng.start()
    try:
        yield eng
    finally:
        eng.stop()
        ctx.close()
        model.close()


class Sink:
    """A request's sink (called on the engine thread): its events, and `done` once it ended."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.done = threading.Event()

    def __call__(self, events: list[Event]) -> None:
        for event in events:
            self.record(event)
            if isinstance(event, Finished | Failed):
                self.done.set()

    def record(self, event: Event) -> None:
        self.events.append(event)
