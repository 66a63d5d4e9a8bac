"""OpenAI messages and tools: validation, and shaping for what a template can handle."""

from __future__ import annotations

from typing import Any

import pytest

from service.chat_template import ChatTemplate, TemplateError
from service.chat_template_builtins import CHATML_TEMPLATE

# Prints each message as JSON so tests can see exactly what the template received.
JSON_DUMP = "{% for m in messages %}{{ m | tojson }}\n{% endfor %}"
# Handles only content-part arrays (iterates them); a plain string would lose its text.
PARTS_ONLY = (
    "{% for m in messages %}{{ m.role }}:"
    "{% for p in m.content %}{{ p.text }}|{% endfor %};{% endfor %}"
)
# Reads tool-call arguments as an object, like most tool-calling templates.
OBJECT_ARGS = (
    "{% for m in messages %}{% for c in m.tool_calls or [] %}"
    "{{ c.function.name }}({% for k, v in c.function.arguments.items() %}{{ k }}={{ v }}"
    "{% endfor %}){% endfor %}{{ m.content }}\n{% endfor %}"
)
# Prints tool-call arguments verbatim, so it wants the JSON string.
STRING_ARGS = (
    "{% for m in messages %}{% for c in m.tool_calls or [] %}"
    "{{ c.function.name }}{{ c.function.arguments }}{% endfor %}{{ m.content }}\n{% endfor %}"
)


def call(arguments: Any, call_id: str = "call_1") -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": "get_weather", "arguments": arguments},
    }


def render(source: str, messages: list[Any], **kwargs: Any) -> str:
    return ChatTemplate.compile(source).render(messages, add_generation_prompt=False, **kwargs)


def test_messages_are_rebuilt_like_llama_server() -> None:
    # (tojson reads the arguments as an object, so they arrive parsed.)
    messages = [
        {"role": "user", "content": "hi", "extra_field": 1},
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": "thinking",
            "tool_calls": [call({"city": "Paris"})],
        },
        {"role": "tool", "content": "sunny", "tool_call_id": "call_1", "name": "get_weather"},
        {"role": "assistant", "content": "ok", "name": "", "reasoning_content": None},
    ]
    assert render(JSON_DUMP, messages).splitlines() == [
        '{"role": "user", "content": "hi"}',
        '{"role": "assistant", "content": "", "reasoning_content": "thinking", "tool_calls": '
        '[{"type": "function", "function": {"name": "get_weather", '
        '"arguments": {"city": "Paris"}}, "id": "call_1"}]}',
        '{"role": "tool", "content": "sunny", "name": "get_weather", "tool_call_id": "call_1"}',
        '{"role": "assistant", "content": "ok"}',
    ]


def test_text_parts_are_joined_for_string_only_templates() -> None:
    parts = [
        {"type": "text", "text": "first"},
        {"type": "text", "text": "second"},
    ]
    template = ChatTemplate.compile(CHATML_TEMPLATE)
    assert template.caps.supports_string_content and not template.caps.supports_typed_content
    assert template.render([{"role": "user", "content": parts}], add_generation_prompt=False) == (
        "<|im_start|>user\nfirst\nsecond<|im_end|>\n"
    )


def test_media_markers_are_joined_without_newlines() -> None:
    parts = [
        {"type": "text", "text": "look:"},
        {"type": "media_marker", "text": "<__media__>"},
        {"type": "text", "text": "what is it?"},
    ]
    assert render(JSON_DUMP, [{"role": "user", "content": parts}]) == (
        '{"role": "user", "content": "look:<__media__>what is it?"}\n'
    )


def test_strings_are_wrapped_for_parts_only_templates() -> None:
    template = ChatTemplate.compile(PARTS_ONLY)
    assert template.caps.supports_typed_content and not template.caps.supports_string_content
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
    ]
    assert template.render(messages, add_generation_prompt=False) == "system:be brief|;user:a|b|;"


def test_parts_are_kept_for_templates_handling_both() -> None:
    both = (
        "{% for m in messages %}{% if m.content is string %}{{ m.content }}"
        "{% else %}{% for p in m.content %}[{{ p.text }}]{% endfor %}{% endif %}{% endfor %}"
    )
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert render(both, [{"role": "user", "content": "s"}, {"role": "user", "content": parts}]) == (
        "s[a][b]"
    )


def test_string_arguments_become_objects_for_object_templates() -> None:
    template = ChatTemplate.compile(OBJECT_ARGS)
    assert template.caps.supports_object_arguments
    messages = [{"role": "assistant", "content": "", "tool_calls": [call('{"city": "Paris"}')]}]
    assert template.render(messages, add_generation_prompt=False) == "get_weather(city=Paris)\n"


def test_object_arguments_become_json_text_for_string_templates() -> None:
    template = ChatTemplate.compile(STRING_ARGS)
    assert not template.caps.supports_object_arguments
    messages = [{"role": "assistant", "tool_calls": [call({"city": "Paris", "n": 1})]}]
    assert template.render(messages, add_generation_prompt=False) == (
        'get_weather{"city":"Paris","n":1}\n'
    )


def test_unparseable_arguments_fail_for_object_templates() -> None:
    messages = [{"role": "assistant", "content": "", "tool_calls": [call("{not json")]}]
    with pytest.raises(TemplateError, match="tool call arguments as JSON"):
        render(OBJECT_ARGS, messages)


def test_developer_role_becomes_system() -> None:
    messages = [{"role": "developer", "content": "rules"}, {"role": "user", "content": "hi"}]
    assert render(CHATML_TEMPLATE, messages).startswith("<|im_start|>system\nrules<|im_end|>")


def test_system_message_alone_is_dropped_for_templates_without_system_role() -> None:
    no_system = (
        "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system') }}"
        "{% endif %}[{{ m.role }}:{{ m.content }}]{% endfor %}"
    )
    template = ChatTemplate.compile(no_system)
    assert not template.caps.supports_system_role
    assert template.render([{"role": "system", "content": "s"}]) == ""
    two = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    assert template.render(two) == "[user:s\nu]"


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ("hello", "expected 'messages' to be an array"),
        (["hello"], "expected each message to be an object"),
        ([{"content": "x"}], "missing 'role'"),
        ([{"role": "wizard", "content": "x"}], "unknown role 'wizard'"),
        ([{"role": "function", "content": "x"}], "unknown role 'function'"),
        ([{"role": "user"}], "All non-assistant messages must contain 'content'"),
        ([{}], "All non-assistant messages must contain 'content'"),
        ([{"role": "wizard"}], "All non-assistant messages must contain 'content'"),
        ([{"role": "assistant"}], "Assistant message must contain either 'content' or "
                                  "'tool_calls'!"),
        ([{"role": "user", "content": 5}], "invalid 'content' type"),
        ([{"role": "user", "content": [{"text": "x"}]}], "missing content part type"),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            "unsupported content part type 'image_url'",
        ),
        ([{"role": "user", "content": [{"type": "text"}]}], "'text' must be a string"),
        ([{"role": "assistant", "tool_calls": [{"function": {}}]}], "missing tool call type"),
        (
            [{"role": "assistant", "tool_calls": [{"type": "function", "function": {}}]}],
            "missing tool call name",
        ),
        (
            [
                {
                    "role": "assistant",
                    "tool_calls": [{"type": "function", "function": {"name": "f"}}],
                }
            ],
            "missing tool call arguments",
        ),
        ([{"role": "assistant", "tool_calls": "nope"}], "'tool_calls' must be an array"),
        ([{"role": "tool", "content": "x", "tool_call_id": 7}], "'tool_call_id' must be a string"),
    ],
)
def test_invalid_messages_are_template_errors(messages: Any, error: str) -> None:
    template = ChatTemplate.compile(CHATML_TEMPLATE)
    with pytest.raises(TemplateError, match=f"Failed to parse messages: .*{error}"):
        template.render(messages)


@pytest.mark.parametrize(
    ("tools", "error"),
    [
        ({"type": "function"}, "expected 'tools' to be an array"),
        ([{"function": {"name": "f"}}], "missing tool type"),
        ([{"type": "retrieval"}], "unsupported tool type"),
        ([{"type": "function", "function": {}}], "missing tool function name"),
    ],
)
def test_invalid_tools_are_template_errors(tools: Any, error: str) -> None:
    template = ChatTemplate.compile(CHATML_TEMPLATE)
    with pytest.raises(TemplateError, match=f"Failed to parse tools: {error}"):
        template.render([{"role": "user", "content": "x"}], tools=tools)


def test_tools_are_normalised_like_llama_server() -> None:
    tools = [{"type": "function", "function": {"name": "f", "strict": True}}]
    rendered = render("{{ tools | tojson }}", [{"role": "user", "content": "x"}], tools=tools)
    assert rendered == (
        '[{"type": "function", "function": {"name": "f", "description": "", "parameters": {}}}]'
    )
    # No tools, or an empty list: the variable is not defined at all.
    assert render("{{ tools is defined }}", [{"role": "user", "content": "x"}], tools=[]) == "False"


def test_caps_map_has_llama_server_keys() -> None:
    caps = ChatTemplate.compile(CHATML_TEMPLATE).caps.to_map()
    assert set(caps) == {
        "supports_object_arguments",
        "supports_parallel_tool_calls",
        "supports_preserve_reasoning",
        "supports_reasoning_effort",
        "supports_string_content",
        "supports_system_role",
        "supports_tool_calls",
        "supports_tools",
        "supports_typed_content",
    }
    assert caps["supports_system_role"] and not caps["supports_tools"]
