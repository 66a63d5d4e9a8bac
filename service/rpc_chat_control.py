"""ControlChatCompletion (POST /v1/chat/completions/control, llama-server's): acts on a running
chat completion by its id. "reasoning_end" ends the thinking block of each of its choices at the
engine's next step (service.reasoning_budget), when the request armed it with
`reasoning_control: true`. As llama-server: a missing id or another action is a 400; an id that
names no running completion, or one not armed, answers success false with the reason."""

from __future__ import annotations

from typing import Any

from llama.v1 import chat_pb2

from service.engine.params import ParamError
from service.rpc_base import Context, ServicerBase
from service.rpc_errors import unary

NO_COMPLETION = "no active completion for this id"
NOT_ARMED = "reasoning control not enabled for this completion"


class ChatControlRpcs(ServicerBase):
    @unary
    async def ControlChatCompletion(self, request: Any, context: Context) -> Any:
        if not request.id:
            raise ParamError("missing completion id", field="id")
        if request.action != "reasoning_end":
            raise ParamError("unknown control action", field="action")
        self._rt()
        gen = self._registry.get(request.id)
        if gen is None or gen.done:
            return chat_pb2.ControlChatCompletionResponse(success=False, message=NO_COMPLETION)
        budgets = [t.budget for t in gen.tasks if getattr(t, "budget", None) is not None]
        if not budgets or not all(b.spec.control for b in budgets):
            return chat_pb2.ControlChatCompletionResponse(success=False, message=NOT_ARMED)
        for budget in budgets:
            budget.request_end()  # read by the engine thread at its next step
        return chat_pb2.ControlChatCompletionResponse(success=True)
