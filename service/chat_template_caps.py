"""Find out what a chat template can render by rendering it a few times with probes.

llama.cpp's Jinja engine records which input values a template touched; Python's Jinja
cannot, so each probe puts a marker string where the question lies and looks for it in
the output.  A probe that raises answers "no".  The questions and their defaults are
llama-server's (``chat_template_caps`` in ``/props``).  About ten renders of tiny
conversations: done once, when a template is compiled.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from service.chat_template_messages import TemplateCaps

# Renders the template with the given context; returns None if it raised.
ProbeRenderer = Callable[[dict[str, Any]], "str | None"]

_STRING_MARKER = "STRING_CONTENT_MARKER"
_TYPED_MARKER = "TYPED_CONTENT_MARKER"
_SYSTEM_MARKER = "SYSTEM_PROMPT_MARKER"
_TOOL_DEF_MARKER = "probe_defined_tool"
_TOOL_CALL_MARKER = "probe_called_tool"
_SECOND_CALL_MARKER = "probe_second_tool"
_ARG_MARKER = "ARGUMENT_VALUE_MARKER"
_REASONING_MARKER = "<REASONING_CONTENT_PLACEHOLDER>"

_PROBE_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": _TOOL_DEF_MARKER,
            "description": "Tool description",
            "parameters": {
                "type": "object",
                "properties": {"arg": {"type": "string", "description": "Arg description"}},
                "required": ["arg"],
            },
        },
    }
]


def _context(messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "messages": messages,
        "bos_token": "",
        "eos_token": "",
        "add_generation_prompt": True,
        **extra,
    }


def _contains(output: str | None, marker: str) -> bool:
    return output is not None and marker in output


def _probe_string_content(render: ProbeRenderer) -> bool:
    out = render(_context([{"role": "user", "content": _STRING_MARKER}]))
    return _contains(out, _STRING_MARKER)


def _probe_typed_content(render: ProbeRenderer) -> bool:
    parts = [{"type": "text", "text": _TYPED_MARKER}]
    out = render(_context([{"role": "user", "content": parts}]))
    # A template printing the list itself shows its repr or JSON, not real support.
    return (
        out is not None
        and _TYPED_MARKER in out
        and f"'text': '{_TYPED_MARKER}" not in out
        and f'"text": "{_TYPED_MARKER}' not in out
    )


def _tool_call(name: str, call_id: str, arguments: Any) -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


def _tool_conversation(
    content: Callable[[str], Any], calls: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": content("User message")},
        {"role": "assistant", "content": content(""), "tool_calls": calls},
        {"role": "tool", "content": content("Tool response"), "tool_call_id": "call00001"},
        {"role": "assistant", "content": content("The tool response was 'tool response'")},
        {"role": "user", "content": content("User message")},
    ]


def _object_args_used(out: str | None) -> bool:
    # Printing the dict directly gives Python's repr, which no model was trained on.
    return out is not None and _ARG_MARKER in out and f"{{'arg': '{_ARG_MARKER}'}}" not in out


def probe_caps(render: ProbeRenderer) -> TemplateCaps:
    """Probe a template through ``render`` (which must swallow template errors)."""
    string_ok = _probe_string_content(render)
    typed_ok = _probe_typed_content(render)
    if not string_ok and not typed_ok:
        string_ok = True  # llama-server's default when neither probe succeeds

    def content(text: str) -> Any:
        return text if string_ok else [{"type": "text", "text": text}]

    system_out = render(
        _context(
            [
                {"role": "system", "content": content(_SYSTEM_MARKER)},
                {"role": "user", "content": content("User message")},
            ]
        )
    )
    object_call = _tool_call(_TOOL_CALL_MARKER, "call00001", {"arg": _ARG_MARKER})
    object_out = render(_context(_tool_conversation(content, [object_call]), tools=_PROBE_TOOLS))
    object_args = _object_args_used(object_out)
    tool_out = object_out
    if not object_args:
        string_call = _tool_call(_TOOL_CALL_MARKER, "call00001", '{"arg": "' + _ARG_MARKER + '"}')
        tool_out = render(_context(_tool_conversation(content, [string_call]), tools=_PROBE_TOOLS))
    arguments: Any = {"arg": "value"} if object_args else '{"arg": "value"}'
    parallel_out = render(
        _context(
            _tool_conversation(
                content,
                [
                    _tool_call(_TOOL_CALL_MARKER, "call00001", arguments),
                    _tool_call(_SECOND_CALL_MARKER, "call00002", arguments),
                ],
            ),
            tools=_PROBE_TOOLS,
        )
    )
    return TemplateCaps(
        supports_string_content=string_ok,
        supports_typed_content=typed_ok,
        supports_system_role=_contains(system_out, _SYSTEM_MARKER),
        supports_tools=_contains(tool_out, _TOOL_DEF_MARKER),
        supports_tool_calls=_contains(tool_out, _TOOL_CALL_MARKER),
        supports_parallel_tool_calls=_contains(parallel_out, _SECOND_CALL_MARKER),
        supports_object_arguments=object_args,
        supports_preserve_reasoning=_probe_preserve_reasoning(render, content),
        supports_reasoning_effort=_probe_reasoning_effort(render, content),
        supports_enable_thinking=_probe_enable_thinking(render, content),
    )


def preserve_reasoning_flags(enabled: bool) -> dict[str, bool]:
    """The variable names templates use for "keep reasoning in the history"."""
    return {
        "preserve_thinking": enabled,
        "clear_thinking": not enabled,
        "truncate_history_thinking": not enabled,
        "drop_thinking": not enabled,
    }


def reasoning_effort_vars(effort: str) -> dict[str, str]:
    """The variable names templates use for the reasoning effort level."""
    return {"reasoning_effort": effort, "reasoning_strength": effort}


def _probe_preserve_reasoning(render: ProbeRenderer, content: Callable[[str], Any]) -> bool:
    messages = [
        {"role": "user", "content": content("User message")},
        {
            "role": "assistant",
            "content": content("Assistant message"),
            "reasoning_content": _REASONING_MARKER,
        },
        {"role": "user", "content": content("User message")},
        {
            "role": "assistant",
            "content": content("Assistant message"),
            "reasoning_content": "Reasoning content",
        },
        {"role": "user", "content": content("User message")},
    ]
    out = render(_context(messages, enable_thinking=True, **preserve_reasoning_flags(True)))
    return _contains(out, _REASONING_MARKER)


def _probe_reasoning_effort(render: ProbeRenderer, content: Callable[[str], Any]) -> bool:
    messages = [{"role": "user", "content": content("User message")}]
    outputs = {
        render(_context(messages, enable_thinking=True)),
        render(_context(messages, enable_thinking=True, **reasoning_effort_vars("low"))),
        render(_context(messages, enable_thinking=True, **reasoning_effort_vars("high"))),
    }
    return len(outputs - {None}) > 1


def _probe_enable_thinking(render: ProbeRenderer, content: Callable[[str], Any]) -> bool:
    messages = [{"role": "user", "content": content("User message")}]
    on = render(_context(messages, enable_thinking=True))
    off = render(_context(messages, enable_thinking=False))
    return on is not None and off is not None and on != off
