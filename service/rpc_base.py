"""What every group of RPC methods shares: the runtime getter, the registry of running
generations and the worker pool.

LlamaServicer is assembled from one mixin per group of RPCs (service.servicer for generation,
tokens and server state; service/rpc_*.py for the rest), each deriving from ServicerBase, so a
new group of RPCs is a module of its own plus one base class in servicer.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

import grpc

from api_common.errors import LOADING_MODEL
from service.errors import ServiceError
from service.generation import GenerationRegistry
from service.offload import Offload
from service.runtime import Runtime

RuntimeGetter = Callable[[], Runtime | None]
Context: TypeAlias = grpc.aio.ServicerContext


class ServicerBase:
    def __init__(self, runtime: RuntimeGetter, build_info: str = "") -> None:
        self._runtime = runtime
        self._registry = GenerationRegistry()
        self._build_info = build_info
        self._offload = Offload()

    def _rt(self) -> Runtime:
        """The loaded runtime; UNAVAILABLE while the model loads."""
        rt = self._runtime()
        if rt is None:
            raise ServiceError("unavailable", "Loading model", reason=LOADING_MODEL)
        return rt
