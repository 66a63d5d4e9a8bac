"""Chat template rendering: llama.cpp's published templates, exact prompts, message shaping.

The templates are the ~70 in the pinned llama.cpp tree (models/templates/*.jinja); each
is compiled once per test session.  Exact expected prompts are written by hand from
each model family's documented prompt format.
"""

from __future__ import annotations

import functools
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from native.paths import source_dir
from service.chat_template import (
    ChatMessage,
    ChatTemplate,
    TemplateError,
    load_chat_templates,
)
from service.chat_template_builtins import CHATML_TEMPLATE

TEMPLATE_DIR = source_dir() / "models" / "templates"
TEMPLATE_NAMES = sorted(p.stem for p in TEMPLATE_DIR.glob("*.jinja"))
NOW = datetime(2025, 1, 2, 3, 4, 5)

STANDARD: list[dict[str, Any]] = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi there"},
    {"role": "user", "content": "How are you?"},
]
WEATHER_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
TOOL_CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                # Nine alphanumerics: Mistral's templates insist on it.
                "id": "call12345",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call12345", "content": "sunny, 21C"},
    {"role": "assistant", "content": "It is sunny."},
    {"role": "user", "content": "Thanks"},
]

# Templates whose probe finds no tool definitions in the prompt.  SmolLM3 reads
# `xml_tools`, FireFunction `functions`; the others have no tool section at all.
NO_TOOL_DEFINITIONS = {
    "HuggingFaceTB-SmolLM3-3B",
    "deepseek-ai-DeepSeek-R1-Distill-Llama-8B",
    "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B",
    "deepseek-ai-DeepSeek-V3.1",
    "fireworks-ai-llama-3-firefunction-v2",
    "google-gemma-2-2b-it",
    "llama-cpp-rwkv-world",
    "microsoft-Phi-3.5-mini-instruct",
}
# Templates that do not render an assistant's tool calls.
NO_TOOL_CALLS = {
    "HuggingFaceTB-SmolLM3-3B",
    "LFM2-8B-A1B",
    "LFM2.5-Instruct",
    "deepseek-ai-DeepSeek-R1-Distill-Llama-8B",
    "google-gemma-2-2b-it",
    "ibm-granite-granite-3.3-2B-Instruct",
    "llama-cpp-rwkv-world",
    "microsoft-Phi-3.5-mini-instruct",
}
# Templates that legitimately reject the tool conversation, and the reason they give.
REJECTS_TOOL_CONVERSATION = {
    # Gemma 2 only allows strictly alternating user/model turns; a tool turn breaks that.
    "google-gemma-2-2b-it": "roles must alternate",
}
# Templates that render the tool conversation but leave the tool turn out.
DROPS_TOOL_TURNS = {"llama-cpp-rwkv-world", "microsoft-Phi-3.5-mini-instruct"}


@functools.cache
def published(name: str, bos: str = "<s>", eos: str = "</s>") -> ChatTemplate:
    source = (TEMPLATE_DIR / f"{name}.jinja").read_text()
    return ChatTemplate.compile(source, bos_token=bos, eos_token=eos)


def test_template_directory_is_present() -> None:
    assert TEMPLATE_DIR.is_dir(), f"{TEMPLATE_DIR} missing: fetch the pinned llama.cpp source"
    assert len(TEMPLATE_NAMES) >= 70


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_published_template_renders_standard_conversation(name: str) -> None:
    # Every template accepts it: Gemma 2 rejects a system role, but (as in llama-server)
    # the system message is folded into the first user turn for templates without one.
    prompt = published(name).render(STANDARD, now=NOW)
    for message in STANDARD:
        assert message["content"] in prompt
    assert prompt.index("Hello") < prompt.index("Hi there") < prompt.index("How are you?")


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_published_template_renders_tool_definitions(name: str) -> None:
    template = published(name)
    prompt = template.render(TOOL_CONVERSATION[:2], tools=WEATHER_TOOLS, now=NOW)
    assert "Weather in Paris?" in prompt
    assert template.caps.supports_tools == (name not in NO_TOOL_DEFINITIONS)
    if template.caps.supports_tools:
        assert "get_weather" in prompt
        assert "Get the current weather in a city" in prompt


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_published_template_renders_tool_conversation(name: str) -> None:
    template = published(name)
    assert template.caps.supports_tool_calls == (name not in NO_TOOL_CALLS)
    if name in REJECTS_TOOL_CONVERSATION:
        with pytest.raises(TemplateError, match=REJECTS_TOOL_CONVERSATION[name]):
            template.render(TOOL_CONVERSATION, tools=WEATHER_TOOLS, now=NOW)
        return
    prompt = template.render(TOOL_CONVERSATION, tools=WEATHER_TOOLS, now=NOW)
    assert "It is sunny." in prompt and "Thanks" in prompt
    assert ("sunny, 21C" in prompt) == (name not in DROPS_TOOL_TURNS)
    if template.caps.supports_tool_calls:
        assert "get_weather" in prompt and "Paris" in prompt


def test_gemma2_rejects_non_alternating_roles() -> None:
    messages = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(TemplateError, match="Conversation roles must alternate"):
        published("google-gemma-2-2b-it").render(messages)


# --- exact prompts, from each family's documented format -----------------------------


def test_llama_3_1_prompt() -> None:
    template = published("meta-llama-Llama-3.1-8B-Instruct", "<|begin_of_text|>", "<|eot_id|>")
    expected = (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        "Cutting Knowledge Date: December 2023\nToday Date: 02 Jan 2025\n\n"
        "You are a helpful assistant.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert template.render(STANDARD, now=NOW) == expected


def test_llama_3_2_tool_call_uses_object_arguments() -> None:
    template = published("meta-llama-Llama-3.2-3B-Instruct", "<|begin_of_text|>", "<|eot_id|>")
    assert template.caps.supports_object_arguments
    assert not template.caps.supports_parallel_tool_calls  # it raises on two calls
    prompt = template.render(TOOL_CONVERSATION, tools=WEATHER_TOOLS, now=NOW)
    assert prompt.startswith(
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        "Environment: ipython\nCutting Knowledge Date: December 2023\n"
        "Today Date: 02 Jan 2025\n\nYou are a helpful assistant.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\n"
        "Given the following functions, please respond with a JSON for a function call "
        "with its proper arguments that best answers the given prompt.\n\n"
    )
    assert prompt.endswith(
        "Weather in Paris?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
        '{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|>'
        "<|start_header_id|>ipython<|end_header_id|>\n\n"
        '"sunny, 21C"<|eot_id|>'
        "<|start_header_id|>assistant<|end_header_id|>\n\nIt is sunny.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nThanks<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_qwen_2_5_chatml_prompt() -> None:
    template = published("Qwen-Qwen2.5-7B-Instruct")
    assert template.render(STANDARD) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHello<|im_end|>\n"
        "<|im_start|>assistant\nHi there<|im_end|>\n"
        "<|im_start|>user\nHow are you?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    # Without a system message Qwen 2.5 supplies its own.
    assert template.render(STANDARD[1:2], add_generation_prompt=False) == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. "
        "You are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
    )


def test_qwen_2_5_tool_call_and_response() -> None:
    prompt = published("Qwen-Qwen2.5-7B-Instruct").render(TOOL_CONVERSATION, tools=WEATHER_TOOLS)
    assert (
        "<tools>\n"
        '{"type": "function", "function": {"name": "get_weather", "description": '
        '"Get the current weather in a city", "parameters": {"type": "object", "properties": '
        '{"city": {"type": "string"}}, "required": ["city"]}}}\n</tools>'
    ) in prompt
    assert prompt.endswith(
        "<|im_start|>user\nWeather in Paris?<|im_end|>\n"
        "<|im_start|>assistant\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\nsunny, 21C\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\nIt is sunny.<|im_end|>\n"
        "<|im_start|>user\nThanks<|im_end|>\n<|im_start|>assistant\n"
    )


def test_mistral_nemo_puts_system_prompt_in_last_user_turn() -> None:
    prompt = published("mistralai-Mistral-Nemo-Instruct-2407").render(STANDARD)
    assert prompt == (
        "<s>[INST]Hello[/INST]Hi there</s>[INST]You are a helpful assistant.\n\nHow are you?[/INST]"
    )


def test_gemma_2_folds_system_prompt_into_first_user_turn() -> None:
    template = published("google-gemma-2-2b-it", "<bos>", "<eos>")
    assert not template.caps.supports_system_role
    assert template.render(STANDARD) == (
        "<bos><start_of_turn>user\nYou are a helpful assistant.\nHello<end_of_turn>\n"
        "<start_of_turn>model\nHi there<end_of_turn>\n"
        "<start_of_turn>user\nHow are you?<end_of_turn>\n"
        "<start_of_turn>model\n"
    )


def test_phi_3_5_prompt_and_eos_without_generation_prompt() -> None:
    template = published("microsoft-Phi-3.5-mini-instruct", "<s>", "<|endoftext|>")
    body = (
        "<|system|>\nYou are a helpful assistant.<|end|>\n"
        "<|user|>\nHello<|end|>\n<|assistant|>\nHi there<|end|>\n"
        "<|user|>\nHow are you?<|end|>\n"
    )
    assert template.render(STANDARD) == body + "<|assistant|>\n"
    assert template.render(STANDARD, add_generation_prompt=False) == body + "<|endoftext|>"


def test_chatml_fallback_when_model_has_no_template() -> None:
    templates = load_chat_templates(model_template=None)
    assert not templates.explicit
    assert templates.default.source == CHATML_TEMPLATE
    assert templates.default.render(STANDARD[:2]) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    )


# --- context variables and kwargs ----------------------------------------------------


def test_qwen3_enable_thinking_false_via_kwargs() -> None:
    template = published("Qwen-Qwen3-0.6B")
    assert template.caps.supports_enable_thinking
    thinking_off = template.render(STANDARD[1:2], extra_context={"enable_thinking": False})
    assert thinking_off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert template.render(STANDARD[1:2]).endswith("<|im_start|>assistant\n")


def test_context_exposes_dates_kwargs_and_reasoning_aliases() -> None:
    source = (
        "{{ strftime_now('%Y-%m-%d') }}|{{ date_string }}|{{ datetime }}|{{ custom }}|"
        "{{ reasoning_strength }}|{{ clear_thinking }}|{{ enable_thinking }}|"
        "{{ tools is defined }}"
    )
    template = ChatTemplate.compile(source)
    rendered = template.render(
        STANDARD[1:2],
        extra_context={"custom": [1, 2], "reasoning_effort": "high", "preserve_reasoning": True},
        now=NOW,
    )
    assert rendered == "2025-01-02|02 Jan 2025|Jan 02 2025|[1, 2]|high|False|True|False"


def test_bos_and_eos_dropped_when_tokenizer_adds_them() -> None:
    source = "{{ bos_token }}{{ messages[0].content }}{{ eos_token }}"
    plain = ChatTemplate.compile(source, bos_token="<s>", eos_token="</s>")
    assert plain.render(STANDARD[1:2]) == "<s>Hello</s>"
    stripped = ChatTemplate.compile(
        source, bos_token="<s>", eos_token="</s>", add_bos=True, add_eos=True
    )
    assert stripped.render(STANDARD[1:2]) == "Hello"


def test_generation_prompt_and_continuation() -> None:
    template = ChatTemplate.compile(CHATML_TEMPLATE)
    assert template.generation_prompt(STANDARD[1:2]) == "<|im_start|>assistant\n"
    prefill = [*STANDARD[1:2], {"role": "assistant", "content": "Once upon"}]
    assert template.render(prefill, add_generation_prompt=False, continue_final_message=True) == (
        "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nOnce upon"
    )
    with pytest.raises(TemplateError, match="Cannot set both"):
        template.render(prefill, continue_final_message=True)


def test_continuation_inside_reasoning_tags() -> None:
    template = published("Qwen-Qwen3-0.6B")
    tags = ("<think>", "</think>")
    reasoning_only = [
        *STANDARD[1:2],
        {"role": "assistant", "reasoning_content": "Let me", "content": ""},
    ]
    prompt = template.render(
        reasoning_only, add_generation_prompt=False, continue_final_message=True,
        reasoning_tags=tags,
    )  # fmt: skip
    assert prompt.endswith("<|im_start|>assistant\n<think>Let me")
    with_content = [*STANDARD[1:2], {"role": "assistant", "content": "Sure"}]
    prompt = template.render(
        with_content, add_generation_prompt=False, continue_final_message=True,
        reasoning_tags=tags,
    )  # fmt: skip
    assert prompt.endswith("<|im_start|>assistant\n<think></think>Sure")


def test_tool_use_variant_is_chosen_when_tools_are_given() -> None:
    templates = load_chat_templates(
        model_template="{{ 'default' }}", model_tool_use_template="{{ 'tool_use' }}"
    )
    assert templates.for_request(None).render(STANDARD) == "default"
    assert templates.for_request(WEATHER_TOOLS).render(STANDARD) == "tool_use"
    overridden = load_chat_templates(
        override="chatml", model_template="{{ 'x' }}", model_tool_use_template="{{ 'y' }}"
    )
    assert overridden.tool_use is None
    assert overridden.default.source == CHATML_TEMPLATE


def test_chat_message_objects_render_like_json() -> None:
    template = ChatTemplate.compile(CHATML_TEMPLATE)
    objects = [ChatMessage(role=m["role"], content=m["content"]) for m in STANDARD]
    assert template.render(objects) == template.render(STANDARD)


def test_template_file_source_is_read_verbatim(tmp_path: Path) -> None:
    path = tmp_path / "t.jinja"
    path.write_text("{% for m in messages %}\n[{{ m.role }}:{{ m.content }}]\n{% endfor %}")
    templates = load_chat_templates(override=path.read_text())
    # trim_blocks/lstrip_blocks, as transformers sets them, eat the newlines after tags.
    assert templates.default.render(STANDARD[1:3], add_generation_prompt=False) == (
        "[user:Hello]\n[assistant:Hi there]\n"
    )
