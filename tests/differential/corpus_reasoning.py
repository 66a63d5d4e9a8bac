"""Corpus cases for the whitespace around thinking blocks (issue 16): what llama-server's
parser for a template with thinking tags skips and keeps (common/chat-auto-parser-generator.cpp
analyze_reasoning::build_parser, chat-peg-parser.cpp optspace, the mapper's rule for
whitespace-only reasoning). A grammar forces the text the model writes, so each case pins one
rule, streamed and not."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from native.paths import source_dir

from .corpus import GREEDY, MESSAGES, Case


def _template(name: str) -> str:
    return str(source_dir() / "models" / "templates" / name)


# Qwen3's template writes `<think>\n` ... `\n</think>\n\n`; llama.cpp's DeepSeek R1 template opens
# the block in the prompt (`<think>\n`) and writes its tags bare
REASONING_FLAG_SETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "qwen3": ("tiny-bpe", ("--jinja", "--chat-template-file",
                           _template("Qwen-Qwen3-0.6B.jinja"))),
    "r1": ("tiny-bpe", ("--jinja", "--chat-template-file",
                        _template("llama-cpp-deepseek-r1.jinja"))),
}

# (label, flag set, the text the model is made to write, more request fields)
FORCED: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    ("space after the end tag kept", "qwen3", "<think>\nabc\n</think> shop", {}),
    ("only the template's newlines after the end tag skipped", "qwen3",
     "<think>\nabc\n</think>\n\n\n shop", {}),
    ("reasoning keeps its whitespace", "qwen3", "<think> \n abc \n </think>  shop  ", {}),
    ("content a single space", "qwen3", "<think>\nabc\n</think> ", {}),
    ("whitespace-only reasoning dropped", "qwen3", "<think>\n\n</think>\n\nshop", {}),
    ("leading whitespace skipped", "qwen3", "  hello ", {}),
    ("leading whitespace skipped, format none", "qwen3", "  <think>\nabc</think>x",
     {"reasoning_format": "none"}),
    ("deepseek-legacy as deepseek", "qwen3", "<think>\nabc\n</think>\n\nshop",
     {"reasoning_format": "deepseek-legacy"}),
    ("opened block, the prompt's newline starts the reasoning", "r1",
     "abc\n</think>\n\n shop", {}),
    ("opened block, bare end tag skips nothing", "r1", " \nabc</think>\nshop", {}),
    ("opened block never closed", "r1", "  hello ", {}),
    ("opened block, format none", "r1", "  abc</think>x", {"reasoning_format": "none"}),
    ("no thinking tags in the template: a block stays content", "default",
     "<think>abc</think> shop", {"reasoning_format": "deepseek"}),
    ("no thinking tags in the template: whitespace kept", "default", "  hello ",
     {"reasoning_format": "deepseek"}),
)


def reasoning_cases() -> Iterator[Case]:
    for label, flag_set, text, fields in FORCED:
        body = {"messages": MESSAGES, "max_tokens": 64, **GREEDY,
                "grammar": f"root ::= {json.dumps(text)}", **fields}
        for stream in (False, True):
            name = f"chat thinking whitespace: {label}{' stream' if stream else ''} [{flag_set}]"
            yield Case(name, "POST", "/v1/chat/completions", {**body, "stream": stream},
                       flag_set=flag_set)
