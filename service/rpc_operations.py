"""Operating the server: GetMetrics (GET /metrics), ListSlots (GET /slots) and SetProps
(POST /props), each behind its llama-server flag (--metrics, --slots / --no-slots, --props) with
llama-server's error when off.

GetMetrics and ListSlots read the snapshot the engine publishes after each loop turn
(service.engine.monitor): they never wait for, or delay, a step.
"""

from __future__ import annotations

from typing import Any

from llama.v1 import server_pb2

from service.engine.monitor import EngineSnapshot
from service.errors import ServiceError
from service.metrics import MemoryBuffer, MemoryLedger, Metrics, kv_cache_bytes
from service.rpc_base import Context, ServicerBase
from service.rpc_errors import unary
from service.runtime import Runtime
from service.slots_view import SlotsView

# llama-server's messages when an endpoint is off (HTTP 501 not_supported_error).
METRICS_OFF = "This server does not support metrics endpoint. Start it with `--metrics`"
SLOTS_OFF = "This server does not support slots endpoint. Start it with `--slots`"
PROPS_OFF = ("This server does not support changing global properties. Start it with "
             "`--props`")
# Prompts not yet made into text that together hold more tokens than this are turned into text
# off the loop (a task's text is made once: SlotsView).
_INLINE_PROMPT_TOKENS = 4096


class OperationsRpcs(ServicerBase):
    _metrics_state: tuple[Runtime, Metrics] | None = None
    _slots_view: SlotsView | None = None

    def _snapshot(self, rt: Runtime) -> EngineSnapshot:
        snap = rt.engine.monitor.snapshot
        if snap is None:  # published when the engine is made: never None once loaded
            raise ServiceError("unavailable", "Loading model")
        return snap

    def _metrics(self, rt: Runtime) -> Metrics:
        state = self._metrics_state
        if state is None or state[0] is not rt:
            state = self._metrics_state = (rt, Metrics(memory_ledger(rt)))
        return state[1]

    def _slots(self, rt: Runtime) -> SlotsView:
        view = self._slots_view
        if view is None or view.rt is not rt:
            view = self._slots_view = SlotsView(rt)
        return view

    @unary
    async def GetMetrics(self, request: Any, context: Context) -> Any:
        rt = self._rt()
        if not rt.config.endpoints.metrics:
            raise ServiceError("unimplemented", METRICS_OFF)
        return self._metrics(rt).response(self._snapshot(rt))

    @unary
    async def ListSlots(self, request: Any, context: Context) -> Any:
        rt = self._rt()
        if not rt.config.endpoints.slots:
            raise ServiceError("unimplemented", SLOTS_OFF)
        snap = self._snapshot(rt)
        if request.fail_on_no_slot and snap.idle_slots == 0:
            raise ServiceError("unavailable", "no slot available")
        view, states = self._slots(rt), snap.slots
        if view.text_tokens(states) <= _INLINE_PROMPT_TOKENS:
            return view.response(states)
        return await self._offload.run(view.response, states)

    @unary
    async def SetProps(self, request: Any, context: Context) -> Any:
        rt = self._rt()
        if not rt.config.endpoints.props:
            raise ServiceError("unimplemented", PROPS_OFF)
        # The pinned llama-server changes no property ("Options: None yet"): a body naming
        # any is refused, so that a client never believes a change was made.
        names = sorted(request.props.fields) if request.HasField("props") else []
        if names:
            raise ServiceError("invalid_argument", "POST /props cannot change "
                               f"{', '.join(repr(n) for n in names)}: no global property "
                               "can be changed in this version (llama-server's "
                               "\"Options: None yet\")")
        return server_pb2.SetPropsResponse(success=True)


def memory_ledger(rt: Runtime) -> MemoryLedger:
    """The buffers llama.cpp logged as it loaded the model and made the context; llama.h's
    figures for a part it logged none of (the KV cache computed from the model's shape)."""
    m, c = rt.model, rt.config.context
    kv = kv_cache_bytes(rt.ctx.n_ctx, m.n_layer, m.n_embd, m.n_head, m.n_head_kv,
                        c.cache_type_k, c.cache_type_v) if rt.ctx.has_memory else 0.0
    return MemoryLedger.of(
        (MemoryBuffer(b.part, b.buffer_type, b.memory, float(b.bytes))
         for b in (*m.buffers, *rt.ctx.buffers)),
        {"model_weights": float(m.size), "kv_cache": kv})
