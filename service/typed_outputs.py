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
    if reason in FINISH_REASONS:  # optional, as the string: left unset, Envoy prints nothing
        choice.typed_finish_reason = FINISH_REASONS[reason]


def set_role(message: Any, role: str) -> None:
    """A ChatResponseMessage's role and typed_role."""
    message.role = role
    if role in ROLE_ENUMS:
        message.typed_role = ROLE_ENUMS[role]


def stop_type_enum(stop_type: str) -> int | None:
    """The StopType of a stop_type string (None, i.e. unset, for one it does not know)."""
    found = STOP_TYPES.get(stop_type)
    return None if found is None else int(found)
