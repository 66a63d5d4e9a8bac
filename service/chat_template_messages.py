"""OpenAI chat messages and tools, validated and shaped the way chat templates expect them.

Parsing follows llama-server: a message is rebuilt from the fields templates know
(``role``, ``content``, ``reasoning_content``, ``name``, ``tool_call_id``,
``tool_calls``), an absent or null ``content`` becomes ``""``, and the optional fields
appear only when non-empty (templates test ``'tool_calls' in message``).  Tool-call
``arguments`` are kept as a JSON string; an object sent by the client is serialised
compactly.

Shaping for one template (:func:`messages_for_template`) then applies llama-server's
adjustments, driven by what the template can handle (:class:`TemplateCaps`):

* content-part arrays are joined with newlines for templates that only handle string
  content, and plain strings are wrapped as one text part for templates that only handle
  arrays;
* ``developer`` becomes ``system`` (except for GPT-OSS templates, which know it);
* a leading system message is merged into the next message when the template has no
  system role;
* tool-call arguments are parsed into objects for templates that read them as objects.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from service.chat_template_errors import TemplateError

KNOWN_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})

ContentPartType = Literal["text", "media_marker"]


@dataclass(frozen=True)
class ContentPart:
    """One element of an array ``content``: text, or the marker standing for a media input."""

    type: ContentPartType
    text: str


@dataclass(frozen=True)
class ToolCall:
    """An assistant's call of a function; ``arguments`` is JSON text."""

    name: str
    arguments: str
    id: str = ""


@dataclass(frozen=True)
class ChatMessage:
    """One validated chat message; empty strings mean "absent", as in llama.cpp."""

    role: str
    content: str = ""
    content_parts: tuple[ContentPart, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    reasoning_content: str = ""
    name: str = ""
    tool_call_id: str = ""

    def text(self, delimiter: str = "\n\n") -> str:
        """The message's text: ``content``, or its text parts joined by ``delimiter``."""
        if self.content or not self.content_parts:
            return self.content
        return delimiter.join(p.text for p in self.content_parts if p.type == "text")


@dataclass(frozen=True)
class ToolSpec:
    """A function the model may call (OpenAI ``tools[].function``)."""

    name: str
    description: str
    parameters: Mapping[str, Any]

    def to_template(self) -> dict[str, Any]:
        # Same shape and key order as llama-server hands to templates.
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": json.loads(json.dumps(self.parameters)),
            },
        }


@dataclass(frozen=True)
class TemplateCaps:
    """What a chat template can render, found by probing it (see chat_template_caps)."""

    supports_string_content: bool = True
    supports_typed_content: bool = False
    supports_system_role: bool = True
    supports_tools: bool = True
    supports_tool_calls: bool = True
    supports_parallel_tool_calls: bool = True
    supports_object_arguments: bool = False
    supports_preserve_reasoning: bool = False
    supports_reasoning_effort: bool = False
    # Not in llama-server's caps map: whether enable_thinking changes the prompt.
    supports_enable_thinking: bool = False

    def to_map(self) -> dict[str, bool]:
        """The ``chat_template_caps`` object llama-server reports in ``/props``."""
        return {
            "supports_object_arguments": self.supports_object_arguments,
            "supports_parallel_tool_calls": self.supports_parallel_tool_calls,
            "supports_preserve_reasoning": self.supports_preserve_reasoning,
            "supports_reasoning_effort": self.supports_reasoning_effort,
            "supports_string_content": self.supports_string_content,
            "supports_system_role": self.supports_system_role,
            "supports_tool_calls": self.supports_tool_calls,
            "supports_tools": self.supports_tools,
            "supports_typed_content": self.supports_typed_content,
        }


def _fail(what: str, detail: str, value: object) -> TemplateError:
    shown = json.dumps(value, default=repr)
    if len(shown) > 200:
        shown = shown[:200] + "..."
    return TemplateError(f"Failed to parse {what}: {detail}: {shown}")


def _optional_str(message: Mapping[str, Any], key: str) -> str:
    value = message.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _fail("messages", f"'{key}' must be a string", message)
    return value


def _parse_content_parts(parts: Sequence[Any]) -> tuple[ContentPart, ...]:
    parsed = []
    for part in parts:
        if not isinstance(part, Mapping) or "type" not in part:
            raise _fail("messages", "missing content part type", part)
        kind = part["type"]
        if kind not in ("text", "media_marker"):
            raise _fail(
                "messages",
                f"unsupported content part type {kind!r} (only 'text' parts can be rendered; "
                "media must be replaced by media markers first)",
                part,
            )
        text = part.get("text")
        if not isinstance(text, str):
            raise _fail("messages", "content part 'text' must be a string", part)
        parsed.append(ContentPart(type=kind, text=text))
    return tuple(parsed)


def _parse_tool_call(call: Any) -> ToolCall:
    if not isinstance(call, Mapping):
        raise _fail("messages", "a tool call must be an object", call)
    if "type" not in call:
        raise _fail("messages", "missing tool call type", call)
    if call["type"] != "function":
        raise _fail("messages", "unsupported tool call type", call)
    function = call.get("function")
    if not isinstance(function, Mapping):
        raise _fail("messages", "missing tool call function", call)
    name = function.get("name")
    if not isinstance(name, str):
        raise _fail("messages", "missing tool call name", call)
    if "arguments" not in function:
        raise _fail("messages", "missing tool call arguments", call)
    args = function["arguments"]
    if not isinstance(args, str):
        args = json.dumps(args, ensure_ascii=False, separators=(",", ":"))
    call_id = call.get("id")
    if call_id is not None and not isinstance(call_id, str):
        raise _fail("messages", "tool call 'id' must be a string", call)
    return ToolCall(name=name, arguments=args, id=call_id or "")


def parse_message(message: Any) -> ChatMessage:
    """Validate one OpenAI message (a JSON object) into a :class:`ChatMessage`."""
    if not isinstance(message, Mapping):
        raise _fail("messages", "expected each message to be an object", message)
    role = message.get("role")
    has_tool_calls = message.get("tool_calls") is not None
    # llama-server checks content before role (an empty message is missing its content there)
    # and words these two as it does.
    if "content" not in message and role != "assistant":
        raise _fail("messages", "All non-assistant messages must contain 'content'", message)
    if "content" not in message and not has_tool_calls:
        raise _fail("messages", "Assistant message must contain either 'content' or "
                    "'tool_calls'!", message)
    if role is None:
        raise _fail("messages", "missing 'role' in message", message)
    if not isinstance(role, str) or role not in KNOWN_ROLES:
        raise _fail(
            "messages", f"unknown role {role!r} (expected one of {sorted(KNOWN_ROLES)})", message
        )
    content = message.get("content")
    text, parts = "", tuple[ContentPart, ...]()
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        parts = _parse_content_parts(content)
    elif content is not None:
        raise _fail("messages", "invalid 'content' type: expected string or array", message)
    calls: tuple[ToolCall, ...] = ()
    if has_tool_calls:
        raw_calls = message["tool_calls"]
        if not isinstance(raw_calls, list):
            raise _fail("messages", "'tool_calls' must be an array", message)
        calls = tuple(_parse_tool_call(c) for c in raw_calls)
    return ChatMessage(
        role=role,
        content=text,
        content_parts=parts,
        tool_calls=calls,
        reasoning_content=_optional_str(message, "reasoning_content"),
        name=_optional_str(message, "name"),
        tool_call_id=_optional_str(message, "tool_call_id"),
    )


def parse_messages(messages: Any) -> list[ChatMessage]:
    """Validate an OpenAI ``messages`` array; ChatMessage items pass through."""
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise _fail("messages", "expected 'messages' to be an array", messages)
    return [m if isinstance(m, ChatMessage) else parse_message(m) for m in messages]


def parse_tools(tools: Any) -> list[ToolSpec]:
    """Validate an OpenAI ``tools`` array (``None`` means no tools)."""
    if tools is None:
        return []
    if isinstance(tools, str | bytes) or not isinstance(tools, Sequence):
        raise _fail("tools", "expected 'tools' to be an array", tools)
    specs = []
    for tool in tools:
        if isinstance(tool, ToolSpec):
            specs.append(tool)
            continue
        if not isinstance(tool, Mapping) or "type" not in tool:
            raise _fail("tools", "missing tool type", tool)
        if tool["type"] != "function":
            raise _fail("tools", "unsupported tool type", tool)
        function = tool.get("function")
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise _fail("tools", "missing tool function name", tool)
        description = function.get("description") or ""
        parameters = function.get("parameters") or {}
        if not isinstance(description, str) or not isinstance(parameters, Mapping):
            raise _fail("tools", "bad 'description' or 'parameters' in tool function", tool)
        specs.append(ToolSpec(function["name"], description, parameters))
    return specs


def join_content_parts(parts: Sequence[ContentPart]) -> str:
    """Join parts with newlines, but none next to a media marker (as llama-server does)."""
    text = ""
    after_marker = False
    for part in parts:
        if part.type == "media_marker":
            text += part.text
            after_marker = True
            continue
        if text and not after_marker:
            text += "\n"
        text += part.text
        after_marker = False
    return text


def _content_for(message: ChatMessage, caps: TemplateCaps) -> str | list[dict[str, str]]:
    only_string = caps.supports_string_content and not caps.supports_typed_content
    only_typed = caps.supports_typed_content and not caps.supports_string_content
    if message.content_parts:
        has_marker = any(p.type == "media_marker" for p in message.content_parts)
        if only_string or has_marker:
            return join_content_parts(message.content_parts)
        return [{"type": p.type, "text": p.text} for p in message.content_parts]
    if only_typed:
        return [{"type": "text", "text": message.content}]
    return message.content


def _arguments_for(call: ToolCall, as_object: bool) -> Any:
    if not as_object:
        return call.arguments
    try:
        return json.loads(call.arguments)
    except json.JSONDecodeError as exc:
        raise TemplateError(
            f"Failed to parse tool call arguments as JSON ({call.name}): {exc}"
        ) from exc


def _message_dict(message: ChatMessage, caps: TemplateCaps, role: str) -> dict[str, Any]:
    out: dict[str, Any] = {"role": role, "content": _content_for(message, caps)}
    if message.reasoning_content:
        out["reasoning_content"] = message.reasoning_content
    if message.name:
        out["name"] = message.name
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    if message.tool_calls:
        calls = []
        for call in message.tool_calls:
            arguments = _arguments_for(call, caps.supports_object_arguments)
            entry: dict[str, Any] = {
                "type": "function",
                "function": {"name": call.name, "arguments": arguments},
            }
            if call.id:
                entry["id"] = call.id
            calls.append(entry)
        out["tool_calls"] = calls
    return out


def _merge_leading_system(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fold a leading system message into the next one, for templates without system role."""
    if not messages or messages[0]["role"] != "system":
        return messages
    system, rest = messages[0], messages[1:]
    if not rest:
        return rest
    first = dict(rest[0])
    sys_text = system["content"]
    if isinstance(sys_text, list):
        sys_text = "\n".join(part["text"] for part in sys_text)
    if isinstance(first["content"], list):
        first["content"] = [{"type": "text", "text": sys_text}, *first["content"]]
    else:
        first["content"] = sys_text + "\n" + first["content"]
    return [first, *rest[1:]]


def messages_for_template(
    messages: Sequence[ChatMessage], caps: TemplateCaps, *, keep_developer_role: bool = False
) -> list[dict[str, Any]]:
    """The ``messages`` variable for one template: fresh dicts the render may mutate."""
    shaped = []
    for message in messages:
        role = message.role
        if role == "developer" and not keep_developer_role:
            role = "system"
        shaped.append(_message_dict(message, caps, role))
    if not caps.supports_system_role:
        shaped = _merge_leading_system(shaped)
    return shaped
