"""llama.cpp's built-in chat template names (``--chat-template NAME``) as Jinja sources.

llama.cpp formats its built-in templates in C++ (``llama_chat_apply_template``); this
service renders every template with Jinja, so each supported name maps to a Jinja source
written here from the documented prompt format of that name: same text, same trimming,
same handling of the system message.  Most formats are "a prefix and a suffix around
each message, chosen by role", generated from a :class:`_TurnFormat` table; the ones
that carry state across messages are written out by hand.

Every name in the pinned llama.cpp is provided, and each renders exactly what llama.cpp's
C++ formatter produces, with one difference: ``yandex`` has no system role, so (as for
any Jinja template without one) a leading system message is merged into the first user
message instead of being dropped.  A name from a newer llama.cpp raises
:class:`TemplateError` telling the user to pass the Jinja source with
``--chat-template-file``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from service.chat_template_errors import TemplateError

# Every name in llama.cpp's LLM_CHAT_TEMPLATES table (src/llama-chat.cpp).
LLAMA_CPP_BUILTIN_NAMES: tuple[str, ...] = (
    "bailing", "bailing-think", "bailing2", "chatglm3", "chatglm4", "chatml",
    "command-r", "deepseek", "deepseek-ocr", "deepseek2", "deepseek3", "exaone-moe",
    "exaone3", "exaone4", "falcon3", "gemma", "gigachat", "glmedge", "gpt-oss", "granite",
    "granite-4.0", "granite-4.1", "grok-2", "hunyuan-dense", "hunyuan-moe", "hunyuan-vl",
    "kimi-k2", "llama2", "llama2-sys", "llama2-sys-bos", "llama2-sys-strip", "llama3",
    "llama4", "megrez", "minicpm", "mistral-v1", "mistral-v3", "mistral-v3-tekken",
    "mistral-v7", "mistral-v7-tekken", "monarch", "openchat", "orion", "pangu-embedded",
    "phi3", "phi4", "rwkv-world", "seed_oss", "smolvlm", "solar-open", "vicuna",
    "vicuna-orca", "yandex", "zephyr",
)  # fmt: skip


def _lit(text: str) -> str:
    """A Jinja string literal for ``text``."""
    return json.dumps(text, ensure_ascii=False)


# C's isspace() set, which llama.cpp's trim() strips (Jinja's |trim strips more).
_TRIMMED = _lit(" \t\n\r\x0b\x0c")
_ANY_ROLE = "*"


@dataclass(frozen=True)
class _TurnFormat:
    """Each message becomes prefix + content + suffix, chosen by its role.

    ``"{role}"`` in a prefix stands for the message's role.  Roles with no entry (and no
    ``"*"`` entry) are left out of the prompt, as llama.cpp does.  ``first_system``
    formats a system message in first position (other system messages then need their
    own entry to appear); ``header`` is emitted first when the Jinja expression
    ``header_if`` holds.
    """

    turns: Mapping[str, tuple[str, str]]
    generation_prompt: str = ""
    trim_roles: frozenset[str] = field(default_factory=frozenset)
    header: str = ""
    header_if: str = "true"
    first_system: tuple[str, str] | None = None

    def to_jinja(self) -> str:
        lines = []
        header = f"{{{{- {_lit(self.header)} -}}}}"
        if self.header and self.header_if == "true":
            lines.append(header)
        elif self.header:
            lines.append(f"{{%- if {self.header_if} -%}}{header}{{%- endif -%}}")
        lines.append("{%- for message in messages -%}")
        branches = list(self._branches())
        for index, (condition, output) in enumerate(branches):
            keyword = "if" if index == 0 else "elif"
            if condition is None:
                lines.append("{%- else -%}" if index else "{%- if true -%}")
            else:
                lines.append(f"{{%- {keyword} {condition} -%}}")
            lines.append(output)
        if branches:
            lines.append("{%- endif -%}")
        lines.append("{%- endfor -%}")
        if self.generation_prompt:
            lines.append(
                f"{{%- if add_generation_prompt -%}}{{{{- {_lit(self.generation_prompt)} -}}}}"
                "{%- endif -%}"
            )
        return "\n".join(lines)

    def _branches(self) -> Iterator[tuple[str | None, str]]:
        if self.first_system is not None:
            prefix, suffix = self.first_system
            yield 'loop.first and message.role == "system"', self._turn("system", prefix, suffix)
        for role, (prefix, suffix) in self.turns.items():
            if role != _ANY_ROLE:
                yield f"message.role == {_lit(role)}", self._turn(role, prefix, suffix)
        if _ANY_ROLE in self.turns:
            prefix, suffix = self.turns[_ANY_ROLE]
            yield None, self._turn(_ANY_ROLE, prefix, suffix)

    def _turn(self, role: str, prefix: str, suffix: str) -> str:
        head = " ~ message.role ~ ".join(_lit(piece) for piece in prefix.split("{role}"))
        content = _content_expr(role in self.trim_roles or _ANY_ROLE in self.trim_roles)
        return f"{{{{- {head} ~ {content} ~ {_lit(suffix)} -}}}}"


def _content_expr(trimmed: bool) -> str:
    return f"message.content.strip({_TRIMMED})" if trimmed else "message.content"


_ALL = frozenset({_ANY_ROLE})
_BAILING_TURNS = {
    "system": ("<role>SYSTEM</role>", ""),
    "user": ("<role>HUMAN</role>", ""),
    "assistant": ("<role>ASSISTANT</role>", ""),
    "tool": ("<role>TOOL</role>", ""),
}
_EOS_DS = "<｜end▁of▁sentence｜>"

_TURN_FORMATS: dict[str, _TurnFormat] = {
    "chatml": _TurnFormat(
        {_ANY_ROLE: ("<|im_start|>{role}\n", "<|im_end|>\n")}, "<|im_start|>assistant\n"
    ),
    "mistral-v7": _TurnFormat(
        {
            "system": ("[SYSTEM_PROMPT] ", "[/SYSTEM_PROMPT]"),
            "user": ("[INST] ", "[/INST]"),
            _ANY_ROLE: (" ", "</s>"),
        }
    ),
    "mistral-v7-tekken": _TurnFormat(
        {
            "system": ("[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]"),
            "user": ("[INST]", "[/INST]"),
            _ANY_ROLE: ("", "</s>"),
        }
    ),
    "phi3": _TurnFormat({_ANY_ROLE: ("<|{role}|>\n", "<|end|>\n")}, "<|assistant|>\n"),
    "phi4": _TurnFormat(
        {_ANY_ROLE: ("<|im_start|>{role}<|im_sep|>", "<|im_end|>")},
        "<|im_start|>assistant<|im_sep|>",
    ),
    "falcon3": _TurnFormat({_ANY_ROLE: ("<|{role}|>\n", "\n")}, "<|assistant|>\n"),
    "zephyr": _TurnFormat({_ANY_ROLE: ("<|{role}|>\n", "<|endoftext|>\n")}, "<|assistant|>\n"),
    "vicuna": _TurnFormat(
        {
            "system": ("", "\n\n"),
            "user": ("USER: ", "\n"),
            "assistant": ("ASSISTANT: ", "</s>\n"),
        },
        "ASSISTANT:",
    ),
    "vicuna-orca": _TurnFormat(
        {
            "system": ("SYSTEM: ", "\n"),
            "user": ("USER: ", "\n"),
            "assistant": ("ASSISTANT: ", "</s>\n"),
        },
        "ASSISTANT:",
    ),
    "deepseek": _TurnFormat(
        {
            "system": ("", ""),
            "user": ("### Instruction:\n", "\n"),
            "assistant": ("### Response:\n", "\n<|EOT|>\n"),
        },
        "### Response:\n",
    ),
    "deepseek2": _TurnFormat(
        {
            "system": ("", "\n\n"),
            "user": ("User: ", "\n\n"),
            "assistant": ("Assistant: ", _EOS_DS),
        },
        "Assistant:",
    ),
    "deepseek3": _TurnFormat(
        {
            "system": ("", "\n\n"),
            "user": ("<｜User｜>", ""),
            "assistant": ("<｜Assistant｜>", _EOS_DS),
        },
        "<｜Assistant｜>",
    ),
    "command-r": _TurnFormat(
        {
            "system": ("<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>", "<|END_OF_TURN_TOKEN|>"),
            "user": ("<|START_OF_TURN_TOKEN|><|USER_TOKEN|>", "<|END_OF_TURN_TOKEN|>"),
            "assistant": ("<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>", "<|END_OF_TURN_TOKEN|>"),
        },
        "<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>",
        trim_roles=_ALL,
    ),
    "llama3": _TurnFormat(
        {_ANY_ROLE: ("<|start_header_id|>{role}<|end_header_id|>\n\n", "<|eot_id|>")},
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        trim_roles=_ALL,
    ),
    "llama4": _TurnFormat(
        {_ANY_ROLE: ("<|header_start|>{role}<|header_end|>\n\n", "<|eot|>")},
        "<|header_start|>assistant<|header_end|>\n\n",
        trim_roles=_ALL,
    ),
    "chatglm3": _TurnFormat(
        {_ANY_ROLE: ("<|{role}|>\n ", "")}, "<|assistant|>", header="[gMASK]sop"
    ),
    "chatglm4": _TurnFormat(
        {_ANY_ROLE: ("<|{role}|>\n", "")}, "<|assistant|>\n", header="[gMASK]<sop>"
    ),
    "glmedge": _TurnFormat({_ANY_ROLE: ("<|{role}|>\n", "")}, "<|assistant|>"),
    "exaone3": _TurnFormat(
        {
            "system": ("[|system|]", "[|endofturn|]\n"),
            "user": ("[|user|]", "\n"),
            "assistant": ("[|assistant|]", "[|endofturn|]\n"),
        },
        "[|assistant|]",
        trim_roles=_ALL,
    ),
    "exaone4": _TurnFormat(
        {
            "system": ("[|system|]", "[|endofturn|]\n"),
            "user": ("[|user|]", "\n"),
            "assistant": ("[|assistant|]", "[|endofturn|]\n"),
            "tool": ("[|tool|]", "[|endofturn|]\n"),
        },
        "[|assistant|]",
        trim_roles=_ALL,
    ),
    "exaone-moe": _TurnFormat(
        {
            role: (f"<|{role}|>\n", "<|endofturn|>\n")
            for role in ("system", "user", "assistant", "tool")
        },
        "<|assistant|>\n",
        trim_roles=_ALL,
    ),
    "granite": _TurnFormat(
        {_ANY_ROLE: ("<|start_of_role|>{role}<|end_of_role|>", "<|end_of_text|>\n")},
        "<|start_of_role|>assistant<|end_of_role|>",
    ),
    "megrez": _TurnFormat(
        {_ANY_ROLE: ("<|role_start|>{role}<|role_end|>", "<|turn_end|>")},
        "<|role_start|>assistant<|role_end|>",
    ),
    "gpt-oss": _TurnFormat(
        {
            "assistant": ("<|start|>assistant<|message|>", "<|return|>"),
            _ANY_ROLE: ("<|start|>{role}<|message|>", "<|end|>"),
        },
        "<|start|>assistant",
    ),
    "kimi-k2": _TurnFormat(
        {
            "system": ("<|im_system|>system<|im_middle|>", "<|im_end|>"),
            "user": ("<|im_user|>user<|im_middle|>", "<|im_end|>"),
            "assistant": ("<|im_assistant|>assistant<|im_middle|>", "<|im_end|>"),
            "tool": ("<|im_system|>tool<|im_middle|>", "<|im_end|>"),
            _ANY_ROLE: ("", "<|im_end|>"),
        },
        "<|im_assistant|>assistant<|im_middle|>",
    ),
    "seed_oss": _TurnFormat(
        {
            "assistant": ("<seed:bos>assistant\n", "<seed:eos>"),
            _ANY_ROLE: ("<seed:bos>{role}\n", "<seed:eos>"),
        },
        "<seed:bos>assistant\n",
        trim_roles=frozenset({"assistant"}),
    ),
    "solar-open": _TurnFormat(
        {_ANY_ROLE: ("<|begin|>{role}<|content|>", "<|end|>")}, "<|begin|>assistant"
    ),
    "grok-2": _TurnFormat(
        {
            "system": ("System: ", "<|separator|>\n\n"),
            "user": ("Human: ", "<|separator|>\n\n"),
            "assistant": ("Assistant: ", "<|separator|>\n\n"),
        },
        "Assistant:",
        trim_roles=frozenset({"system", "user"}),
    ),
}
_TURN_FORMATS.update(
    {
        "granite-4.0": _TURN_FORMATS["granite"],
        "granite-4.1": _TURN_FORMATS["granite"],
        "deepseek-ocr": _TurnFormat({_ANY_ROLE: ("", "")}),
        "minicpm": _TurnFormat({"user": ("<用户>", "<AI>"), _ANY_ROLE: ("", "")}, trim_roles=_ALL),
        "smolvlm": _TurnFormat(
            {
                "system": ("", "\n\n"),
                "user": ("User: ", "<end_of_utterance>\n"),
                _ANY_ROLE: ("Assistant: ", "<end_of_utterance>\n"),
            },
            "Assistant:",
            header="<|im_start|>",
        ),
        "bailing": _TurnFormat(_BAILING_TURNS, "<role>ASSISTANT</role>"),
        "bailing-think": _TurnFormat(_BAILING_TURNS, "<role>ASSISTANT</role><think>"),
        "bailing2": _TurnFormat(
            {role: (prefix, "<|role_end|>") for role, (prefix, _) in _BAILING_TURNS.items()},
            "<role>ASSISTANT</role>",
            header="<role>SYSTEM</role>detailed thinking off<|role_end|>",
            header_if='not messages or messages[0].role != "system"',
        ),
        "gigachat": _TurnFormat(
            {
                "user": (
                    "user<|role_sep|>",
                    "<|message_sep|>available functions<|role_sep|>[]<|message_sep|>",
                ),
                "assistant": ("assistant<|role_sep|>", "<|message_sep|>"),
            },
            "assistant<|role_sep|>",
            header="<s>",
            first_system=("", "<|message_sep|>"),
        ),
        "yandex": _TurnFormat(
            {"user": (" Пользователь: ", "\n\n"), "assistant": (" Ассистент: ", "\n\n")},
            " Ассистент:[SEP]",
        ),
        "hunyuan-moe": _TurnFormat(
            {
                "system": ("<|startoftext|>", "<|extra_4|>"),
                "assistant": ("", "<|eos|>"),
                _ANY_ROLE: ("<|startoftext|>", "<|extra_0|>"),
            }
        ),
        "hunyuan-dense": _TurnFormat(
            {
                "assistant": ("<｜hy_Assistant｜>", "<｜hy_place▁holder▁no▁2｜>"),
                "user": ("<｜hy_User｜>", "<｜hy_Assistant｜>"),
            },
            first_system=("", "<｜hy_place▁holder▁no▁3｜>"),
        ),
        "hunyuan-vl": _TurnFormat(
            {"user": ("", "<｜hy_User｜>"), "assistant": ("", "<｜hy_Assistant｜>")},
            header="<｜hy_begin▁of▁sentence｜>",
            first_system=("", "<｜hy_place▁holder▁no▁3｜>"),
        ),
        "pangu-embedded": _TurnFormat(
            {
                "system": ("[unused9]系统：", "[unused10]"),
                "user": ("[unused9]用户：", "[unused10]"),
                "assistant": ("[unused9]助手：", "[unused10]"),
                "tool": ("[unused9]工具：", "[unused10]"),
            },
            "[unused9]助手：",
            header="[unused9]系统：[unused10]",
            header_if='messages and messages[0].role != "system"',
        ),
    }
)


def _llama2(*, system_tags: bool, bos_in_history: bool, strip: bool) -> str:
    reopen = "<s>[INST] " if bos_in_history else "[INST] "
    system = '"<<SYS>>\\n" ~ content ~ "\\n<</SYS>>\\n\\n"' if system_tags else 'content ~ "\\n"'
    return f"""\
{{%- set ns = namespace(inside=true) -%}}
{{{{- "[INST] " -}}}}
{{%- for message in messages -%}}
{{%- set content = {_content_expr(strip)} -%}}
{{%- if not ns.inside -%}}{{%- set ns.inside = true -%}}{{{{- {_lit(reopen)} -}}}}{{%- endif -%}}
{{%- if message.role == "system" -%}}{{{{- {system} -}}}}
{{%- elif message.role == "user" -%}}{{{{- content ~ " [/INST]" -}}}}
{{%- else -%}}{{{{- content ~ "</s>" -}}}}{{%- set ns.inside = false -%}}
{{%- endif -%}}
{{%- endfor -%}}"""


def _mistral(*, lead: str, trail: str, trim_assistant: bool) -> str:
    return f"""\
{{%- set ns = namespace(inside=false) -%}}
{{%- for message in messages -%}}
{{%- if not ns.inside -%}}
{{{{- {_lit(lead + "[INST]" + trail)} -}}}}{{%- set ns.inside = true -%}}
{{%- endif -%}}
{{%- if message.role == "system" -%}}{{{{- message.content ~ "\\n\\n" -}}}}
{{%- elif message.role == "user" -%}}{{{{- message.content ~ {_lit(lead + "[/INST]")} -}}}}
{{%- else -%}}
{{{{- {_lit(trail)} ~ {_content_expr(trim_assistant)} ~ "</s>" -}}}}{{%- set ns.inside = false -%}}
{{%- endif -%}}
{{%- endfor -%}}"""


_GEMMA = f"""\
{{%- set ns = namespace(system="") -%}}
{{%- for message in messages -%}}
{{%- if message.role == "system" -%}}{{%- set ns.system = ns.system ~ {_content_expr(True)} -%}}
{{%- else -%}}
{{%- set role = "model" if message.role == "assistant" else message.role -%}}
{{{{- "<start_of_turn>" ~ role ~ "\\n" -}}}}
{{%- if ns.system and role != "model" -%}}
{{{{- ns.system ~ "\\n\\n" -}}}}{{%- set ns.system = "" -%}}
{{%- endif -%}}
{{{{- {_content_expr(True)} ~ "<end_of_turn>\\n" -}}}}
{{%- endif -%}}
{{%- endfor -%}}
{{%- if add_generation_prompt -%}}{{{{- "<start_of_turn>model\\n" -}}}}{{%- endif -%}}"""

_ORION = """\
{%- set ns = namespace(system="") -%}
{%- for message in messages -%}
{%- if message.role == "system" -%}{%- set ns.system = ns.system ~ message.content -%}
{%- elif message.role == "user" -%}
{{- "Human: " -}}
{%- if ns.system -%}{{- ns.system ~ "\\n\\n" -}}{%- set ns.system = "" -%}{%- endif -%}
{{- message.content ~ "\\n\\nAssistant: </s>" -}}
{%- else -%}{{- message.content ~ "</s>" -}}
{%- endif -%}
{%- endfor -%}"""

_MONARCH = """\
{%- for message in messages -%}
{{- ("" if loop.first else "<s>") ~ message.role ~ "\\n" ~ message.content ~ "</s>\\n" -}}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- "<s>assistant\\n" -}}{%- endif -%}"""

_OPENCHAT = """\
{%- for message in messages -%}
{%- if message.role == "system" -%}{{- message.content ~ "<|end_of_turn|>" -}}
{%- else -%}
{{- "GPT4 Correct " ~ message.role[:1].upper() ~ message.role[1:] ~ ": " -}}
{{- message.content ~ "<|end_of_turn|>" -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- "GPT4 Correct Assistant:" -}}{%- endif -%}"""

# No generation-prompt switch: "Assistant:" follows a final user message (EOT is "\n\n").
_RWKV_WORLD = f"""\
{{%- for message in messages -%}}
{{%- if message.role == "system" -%}}{{{{- "System: " ~ {_content_expr(True)} ~ "\\n\\n" -}}}}
{{%- elif message.role == "user" -%}}
{{{{- "User: " ~ {_content_expr(True)} ~ "\\n\\n" -}}}}
{{%- if loop.last -%}}{{{{- "Assistant:" -}}}}{{%- endif -%}}
{{%- elif message.role == "assistant" -%}}
{{{{- "Assistant: " ~ {_content_expr(True)} ~ "\\n\\n" -}}}}
{{%- endif -%}}
{{%- endfor -%}}"""

_HANDWRITTEN: dict[str, str] = {
    "llama2": _llama2(system_tags=False, bos_in_history=False, strip=False),
    "llama2-sys": _llama2(system_tags=True, bos_in_history=False, strip=False),
    "llama2-sys-bos": _llama2(system_tags=True, bos_in_history=True, strip=False),
    "llama2-sys-strip": _llama2(system_tags=True, bos_in_history=False, strip=True),
    "mistral-v1": _mistral(lead=" ", trail=" ", trim_assistant=False),
    "mistral-v3": _mistral(lead="", trail=" ", trim_assistant=True),
    "mistral-v3-tekken": _mistral(lead="", trail="", trim_assistant=False),
    "gemma": _GEMMA,
    "orion": _ORION,
    "monarch": _MONARCH,
    "openchat": _OPENCHAT,
    "rwkv-world": _RWKV_WORLD,
}

BUILTIN_TEMPLATES: dict[str, str] = {
    **{name: fmt.to_jinja() for name, fmt in _TURN_FORMATS.items()},
    **_HANDWRITTEN,
}
"""Jinja source for each supported built-in name."""

CHATML_TEMPLATE = BUILTIN_TEMPLATES["chatml"]
"""The template used when a model has none (llama-server falls back to ChatML too)."""


def is_jinja_source(text: str) -> bool:
    """Tell Jinja source from a built-in name, the way llama.cpp does (by its tags)."""
    return "{%" in text or "{{" in text or "{#" in text


def builtin_template(name: str) -> str:
    """The Jinja source standing for built-in template ``name``."""
    source = BUILTIN_TEMPLATES.get(name.strip())
    if source is not None:
        return source
    if name.strip() in LLAMA_CPP_BUILTIN_NAMES:
        raise TemplateError(
            f"built-in chat template {name!r} is not supported by this server; "
            "pass its Jinja source with --chat-template-file"
        )
    raise TemplateError(
        f"unknown chat template {name!r}: not Jinja source (no '{{%' or '{{{{') and not one "
        f"of the built-in names ({', '.join(sorted(BUILTIN_TEMPLATES))}); pass Jinja source "
        "with --chat-template or --chat-template-file"
    )
