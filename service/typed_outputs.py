"""The enum companions of the closed string sets in responses (issue 25, item 6): every place
that writes `finish_reason`, `role` or `stop_type` writes the enum beside it through these,
so the two never disagree. The strings stay for llama-server's JSON (the REST bridge writes
only them)."""

from __future__ import annotations

from typing import Any

from llama.v1 import typed_pb2

FINISH_REASONS = {
    "stop": typed_pb2.FINISH_REASON_STOP,
    "length": typed_pb2.FINISH_REASON_LENGTH,
    "tool_calls": typed_pb2.FINISH_REASON_TOOL_CALLS,
}
STOP_TYPES = {
    "none": typed_pb2.STOP_TYPE_NONE,
    "eos": typed_pb2.STOP_TYPE_EOS,
    "limit": typed_pb2.STOP_TYPE_LIMIT,
    "word": typed_pb2.STOP_TYPE_WORD,
}
ROLE_ENUMS = {
    "system": typed_pb2.ROLE_SYSTEM,
    "developer": typed_pb2.ROLE_DEVELOPER,
    "user": typed_pb2.ROLE_USER,
    "assistant": typed_pb2.ROLE_ASSISTANT,
    "tool": typed_pb2.ROLE_TOOL,
}


def set_finish_reason(choice: Any, reason: str) -> None:
    """A ChatChoice's or OpenAICompletionChoice's finish_reason and typed_finish_reason."""
    choice.finish_reason = reason
    choice.typed_finish_reason = FINISH_REASONS.get(reason, typed_pb2.FINISH_REASON_UNSPECIFIED)


def set_role(message: Any, role: str) -> None:
    """A ChatResponseMessage's role and typed_role."""
    message.role = role
    message.typed_role = ROLE_ENUMS.get(role, typed_pb2.ROLE_UNSPECIFIED)


def stop_type_enum(stop_type: str) -> int:
    """The StopType of a stop_type string (UNSPECIFIED for one it does not know)."""
    return int(STOP_TYPES.get(stop_type, typed_pb2.STOP_TYPE_UNSPECIFIED))
