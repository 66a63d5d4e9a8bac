"""LoRA adapter RPCs: ListLoraAdapters (GET /lora-adapters) and SetLoraAdapters (POST
/lora-adapters). The global scales set here apply to requests built afterwards that have no
`lora` of their own; requests already queued or running keep the set they were built with
(service.lora)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from llama.v1 import server_pb2

from service.lora import checked_scales
from service.rpc_base import Context, ServicerBase
from service.rpc_errors import unary
from service.runtime import LoadedLora

_TASK_NAME = "adapter.lora.task_name"
_PROMPT_PREFIX = "adapter.lora.prompt_prefix"


def adapter_info(lora: LoadedLora) -> Any:
    info = server_pb2.LoraAdapter(id=lora.id, path=lora.path, scale=lora.scale)
    task_name = lora.adapter.meta_value(_TASK_NAME)
    if task_name is not None:
        info.task_name = task_name
    prefix = lora.adapter.meta_value(_PROMPT_PREFIX)
    if prefix is not None:
        info.prompt_prefix = prefix
    return info


class AdapterRpcs(ServicerBase):
    @unary
    async def ListLoraAdapters(self, request: Any, context: Context) -> Any:
        return server_pb2.ListLoraAdaptersResponse(
            adapters=[adapter_info(lora) for lora in self._rt().loras])

    @unary
    async def SetLoraAdapters(self, request: Any, context: Context) -> Any:
        """Adapters not listed get scale 0 (llama-server's rule). Validated as a whole first,
        so a refused request changes nothing."""
        rt = self._rt()
        scales = checked_scales(request.adapters, len(rt.loras), "adapters")
        # One assignment: a request being built on a worker thread sees the old list or the
        # new one, never a mix.
        rt.loras = [replace(lora, scale=scales.get(lora.id, 0.0)) for lora in rt.loras]
        return server_pb2.SetLoraAdaptersResponse(success=True)
