"""A chat template's thinking tags with the whitespace it writes around a reasoning text, as
llama-server's template analysis finds them (common/chat-auto-parser*.cpp): the tags both
render a prefilled reasoning and say which whitespace the answer's parse may skip."""

from __future__ import annotations

import re

from service.chat_parse_formats import detect_format, reasoning_tags
from service.chat_template import ChatTemplate, TemplateError


def template_thinking_tags(template: ChatTemplate) -> tuple[str, str] | None:
    """The template's thinking tags with the whitespace it writes around a reasoning text
    (`<think>\n`, `\n</think>\n\n`), if it writes a thinking block: the prefilled reasoning
    goes inside them, as llama-server's (its template analysis finds them the same way)."""
    cached = _TAGS.get(id(template))
    if cached is not None and cached[0] is template:
        return cached[1]
    start, end = reasoning_tags(detect_format(template.source))
    tags: tuple[str, str] | None = None
    if start in template.source:
        tags = start, end
        probe = [{"role": "user", "content": "U"},
                 {"role": "assistant", "content": "A", "reasoning_content": _THOUGHT}]
        try:
            text = template.render(probe, add_generation_prompt=False)
        except TemplateError:
            text = ""
        found = re.search(rf"({re.escape(start)}\s*){re.escape(_THOUGHT)}(\s*{re.escape(end)}\s*)",
                          text)
        if found:
            tags = found[1], found[2]
    _TAGS[id(template)] = (template, tags)
    return tags


_THOUGHT = "The user is asking me a question"  # a probe's reasoning, found again in its render
_TAGS: dict[int, tuple[ChatTemplate, tuple[str, str] | None]] = {}
