"""A chat request's tool choice: the one reader of `typed_tool_choice` (ours, typed) and of
llama-server's polymorphic `tool_choice` (a string, or OpenAI's named-function object), so
every part of the service sees the same answer.

The typed form, when set, takes precedence. OpenAI's `{"type": "function", "function": {"name":
"f"}}` means "call f": mode "required" with that name (llama-server reads any object as
"auto"; a typed client can only say it the typed way, so both forms agree here).
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from llama.v1 import chat_pb2

from service.engine.params import ParamError
from service.prompt_values import value_to_json

Mode = Literal["auto", "none", "required"]
_MODES: tuple[Mode, ...] = ("auto", "none", "required")
_TYPED_MODES: dict[int, Mode] = {
    chat_pb2.TOOL_CHOICE_MODE_UNSPECIFIED: "auto",
    chat_pb2.TOOL_CHOICE_MODE_AUTO: "auto",
    chat_pb2.TOOL_CHOICE_MODE_NONE: "none",
    chat_pb2.TOOL_CHOICE_MODE_REQUIRED: "required",
}


class ToolChoice(NamedTuple):
    """`mode`: "auto" (the default), "none" or "required"; `function`: with "required", the
    one function the model must call (None: any of the request's tools)."""

    mode: Mode
    function: str | None = None


AUTO = ToolChoice("auto")


def tool_choice_of(request: Any) -> ToolChoice:
    """The request's tool choice, checked (ParamError for an unknown mode, or a function that
    is not one of its tools)."""
    if request.HasField("typed_tool_choice"):
        choice = _typed(request.typed_tool_choice)
    else:
        choice = _from_json(value_to_json(request, "tool_choice"))
    if choice.function is not None:
        names = {t.function.name for t in request.tools}
        if choice.function not in names:
            raise ParamError(f"tool_choice names the function {choice.function!r}, which is "
                             "not one of the request's tools", field=_field(request))
    return choice


def _typed(typed: Any) -> ToolChoice:
    mode = _TYPED_MODES.get(typed.mode)
    if mode is None:
        raise ParamError(f"typed_tool_choice.mode: unknown value {typed.mode}",
                         field="typed_tool_choice.mode")
    if not typed.HasField("function_name"):
        return ToolChoice(mode)
    if typed.mode not in (chat_pb2.TOOL_CHOICE_MODE_UNSPECIFIED,
                          chat_pb2.TOOL_CHOICE_MODE_REQUIRED):
        raise ParamError("typed_tool_choice.function_name is only allowed with "
                         f"TOOL_CHOICE_MODE_REQUIRED, not with mode {mode!r}",
                         field="typed_tool_choice.function_name")
    return ToolChoice("required", typed.function_name)


def _from_json(value: Any) -> ToolChoice:
    if value is None:
        return AUTO
    if isinstance(value, str):
        if value not in _MODES:
            raise ParamError(f"Invalid tool_choice: {value}", field="tool_choice")
        return ToolChoice(value)
    if isinstance(value, dict):
        function = value.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if value.get("type") == "function" and isinstance(name, str) and name:
            return ToolChoice("required", name)
    raise ParamError('tool_choice must be "auto", "none", "required" or {"type": "function", '
                     '"function": {"name": "..."}}', field="tool_choice")


def _field(request: Any) -> str:
    return ("typed_tool_choice.function_name" if request.HasField("typed_tool_choice")
            else "tool_choice")
