"""llama.cpp's built-in template names (``--chat-template NAME``) and their Jinja stand-ins.

Expected prompts are written by hand from each format's documentation (llama.cpp's
``llama_chat_apply_template`` formats for the same names).
"""

from __future__ import annotations

import pytest

from service.chat_template import ChatTemplate, TemplateError, load_chat_templates
from service.chat_template_builtins import (
    BUILTIN_TEMPLATES,
    LLAMA_CPP_BUILTIN_NAMES,
    is_jinja_source,
)

STANDARD = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi there"},
    {"role": "user", "content": "How are you?"},
]

EXPECTED = {
    "chatml": (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi there<|im_end|>\n"
        "<|im_start|>user\nHow are you?<|im_end|>\n<|im_start|>assistant\n"
    ),
    "llama2": (
        "[INST] You are a helpful assistant.\nHello [/INST]Hi there</s>[INST] How are you? [/INST]"
    ),
    "llama2-sys": (
        "[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\n"
        "Hello [/INST]Hi there</s>[INST] How are you? [/INST]"
    ),
    "llama2-sys-bos": (
        "[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\n"
        "Hello [/INST]Hi there</s><s>[INST] How are you? [/INST]"
    ),
    "llama3": (
        "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHi there<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    ),
    "mistral-v1": (
        " [INST] You are a helpful assistant.\n\nHello [/INST] Hi there</s>"
        " [INST] How are you? [/INST]"
    ),
    "mistral-v3": (
        "[INST] You are a helpful assistant.\n\nHello[/INST] Hi there</s>[INST] How are you?[/INST]"
    ),
    "mistral-v3-tekken": (
        "[INST]You are a helpful assistant.\n\nHello[/INST]Hi there</s>[INST]How are you?[/INST]"
    ),
    "mistral-v7": (
        "[SYSTEM_PROMPT] You are a helpful assistant.[/SYSTEM_PROMPT]"
        "[INST] Hello[/INST] Hi there</s>[INST] How are you?[/INST]"
    ),
    "mistral-v7-tekken": (
        "[SYSTEM_PROMPT]You are a helpful assistant.[/SYSTEM_PROMPT]"
        "[INST]Hello[/INST]Hi there</s>[INST]How are you?[/INST]"
    ),
    "gemma": (
        "<start_of_turn>user\nYou are a helpful assistant.\n\nHello<end_of_turn>\n"
        "<start_of_turn>model\nHi there<end_of_turn>\n"
        "<start_of_turn>user\nHow are you?<end_of_turn>\n<start_of_turn>model\n"
    ),
    "phi3": (
        "<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nHello<|end|>\n"
        "<|assistant|>\nHi there<|end|>\n<|user|>\nHow are you?<|end|>\n<|assistant|>\n"
    ),
    "zephyr": (
        "<|system|>\nYou are a helpful assistant.<|endoftext|>\n<|user|>\nHello<|endoftext|>\n"
        "<|assistant|>\nHi there<|endoftext|>\n<|user|>\nHow are you?<|endoftext|>\n"
        "<|assistant|>\n"
    ),
    "vicuna": (
        "You are a helpful assistant.\n\nUSER: Hello\nASSISTANT: Hi there</s>\n"
        "USER: How are you?\nASSISTANT:"
    ),
    "deepseek": (
        "You are a helpful assistant.### Instruction:\nHello\n### Response:\nHi there\n<|EOT|>\n"
        "### Instruction:\nHow are you?\n### Response:\n"
    ),
    "command-r": (
        "<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>You are a helpful assistant.<|END_OF_TURN_TOKEN|>"
        "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>Hello<|END_OF_TURN_TOKEN|>"
        "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>Hi there<|END_OF_TURN_TOKEN|>"
        "<|START_OF_TURN_TOKEN|><|USER_TOKEN|>How are you?<|END_OF_TURN_TOKEN|>"
        "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>"
    ),
}


def builtin(name: str) -> ChatTemplate:
    return load_chat_templates(override=name).default


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_builtin_renders_documented_format(name: str) -> None:
    assert builtin(name).render(STANDARD) == EXPECTED[name]


@pytest.mark.parametrize("name", LLAMA_CPP_BUILTIN_NAMES)
def test_every_llama_cpp_builtin_name_renders(name: str) -> None:
    prompt = builtin(name).render(STANDARD)
    assert "Hello" in prompt and "Hi there" in prompt and "How are you?" in prompt
    assert "You are a helpful assistant." in prompt


def test_builtin_names_cover_llama_cpp_table() -> None:
    assert set(LLAMA_CPP_BUILTIN_NAMES) <= set(BUILTIN_TEMPLATES)
    assert len(LLAMA_CPP_BUILTIN_NAMES) == 54


def test_trimming_follows_each_format() -> None:
    messages = [
        {"role": "user", "content": "  Hello  "},
        {"role": "assistant", "content": "  Hi  "},
        {"role": "user", "content": "  Bye  "},
    ]
    assert builtin("llama3").render(messages, add_generation_prompt=False) == (
        "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
    )
    # mistral-v3 trims only the assistant's reply.
    assert builtin("mistral-v3").render(messages, add_generation_prompt=False) == (
        "[INST]   Hello  [/INST] Hi</s>[INST]   Bye  [/INST]"
    )


def test_generation_prompt_switch() -> None:
    assert builtin("phi3").render(STANDARD[1:2], add_generation_prompt=False) == (
        "<|user|>\nHello<|end|>\n"
    )
    # rwkv-world always cues the assistant after a final user turn (its EOT is "\n\n").
    assert builtin("rwkv-world").render(STANDARD[1:2], add_generation_prompt=False) == (
        "User: Hello\n\nAssistant:"
    )


def test_jinja_source_is_told_from_names() -> None:
    assert is_jinja_source("{{ messages }}")
    assert is_jinja_source("{% for m in messages %}{% endfor %}")
    assert is_jinja_source("{# comment #}")
    assert not is_jinja_source("llama3")
    assert not is_jinja_source("chatml")


def test_unknown_name_is_a_clear_error() -> None:
    with pytest.raises(TemplateError, match=r"unknown chat template 'llama99'.*chat-template-file"):
        load_chat_templates(override="llama99")


def test_model_template_named_chatml_means_chatml() -> None:
    assert load_chat_templates(model_template="chatml").default.render(STANDARD[1:2]) == (
        "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    )
