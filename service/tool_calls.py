"""What a chat request asks of its answer's parsing and constraint: the tool-call format of
its template, the reasoning format, the grammar forcing calls, the special tokens to keep in
the text. Built once per request, off the event loop (with the rest of build_chat).

- `tool_choice` (read through service.tool_choice): "none" leaves tools unparsed; "required"
  or a named function gets a grammar forcing one call (several with parallel_tool_calls) of
  the allowed tools in the template's format; "auto" parses calls the model chooses to make,
  except in the generic format, where a grammar keeps the answer a JSON object (calls or a
  `response`), as llama-server does, and in the native formats a lazy grammar applies from
  the text that starts a call (`<tool_call>`, `[TOOL_CALLS]`, a Llama 3.x answer opening with
  `{"name": "`, a Functionary v3.2 recipient other than "all"...: service.engine.lazy_grammar),
  so that a call's arguments are valid for its tool's schema (not beside a json_schema or
  response_format, which win).
- `parallel_tool_calls`: default, what the template can render; false keeps the first call.
- `parse_tool_calls`: default, tools given and tool_choice not "none".
- `reasoning_format`: the request's, else --reasoning-format; --skip-chat-parsing turns both
  tool-call and reasoning parsing off.
- `generation_prompt`: text parsed as the start of the answer (and so part of the response),
  e.g. "<think>" for a template that opens the block; it replaces the detection of a prompt
  ending inside a thinking block.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from native import Vocab
from service.chat_parse import ChatParseConfig
from service.chat_parse_formats import (
    CONTENT_ONLY,
    FORMATS,
    FUNCTIONARY_V32,
    GENERIC,
    detect_format,
    reasoning_tags,
)
from service.chat_template import ChatTemplate
from service.engine.lazy_grammar import LazySpec
from service.engine.params import ParamError
from service.reasoning import (
    check_reasoning_format,
    opened_lead,
    opens_thinking,
    thinking_whitespace,
)
from service.reasoning_budget import BudgetSpec, budget_spec
from service.thinking_tags import template_thinking_tags
from service.tool_call_grammar import lazy_triggers, tool_call_grammar, tool_defs
from service.tool_choice import tool_choice_of


@dataclass(frozen=True)
class ChatSetup:
    parse: ChatParseConfig
    grammar: str = ""  # forces tool calls ("": none)
    preserved_tokens: frozenset[int] = frozenset()  # special tokens the answer's text keeps
    lazy: LazySpec | None = None  # the grammar is lazy: it applies once a call starts
    budget: BudgetSpec | None = None  # the thinking budget (service.reasoning_budget)


def chat_setup(req: Any, tools: Sequence[Mapping[str, Any]] | None, template: ChatTemplate,
               prompt: str, server_reasoning: str, skip_parsing: bool,
               vocab: Vocab, budget: int = -1, budget_message: str | None = None) -> ChatSetup:
    """The setup for a ChatCompletionRequest whose prompt `template` rendered as `prompt`;
    ParamError for a request that cannot be served (a bad tool schema, "required" without
    tools, tools the template cannot render...)."""
    choice = tool_choice_of(req)
    tools = list(tools or [])
    wants_calls = bool(tools) and choice.mode != "none"
    if choice.mode == "required" and not tools:
        raise ParamError(f"tool_choice {'names a function' if choice.function else 'is'} "
                         "'required' but the request has no tools", field="tool_choice")
    # Firefunction v2's template reads the tools as `functions` (service.chat_render)
    if wants_calls and not template.caps.supports_tools and " functools[" not in template.source:
        raise ParamError("the chat template cannot render tools (it does not show their "
                         "definitions to the model): use a template that does "
                         "(--chat-template-file), or send tool_choice \"none\"", field="tools")
    defs = tool_defs(tools) if wants_calls else []
    reasoning = check_reasoning_format(
        req.reasoning_format if req.HasField("reasoning_format") else server_reasoning)
    fmt = native_fmt = detect_format(template.source)
    parse_calls = req.parse_tool_calls if req.HasField("parse_tool_calls") else wants_calls
    if skip_parsing:
        fmt, reasoning, parse_calls = CONTENT_ONLY, "none", False
    elif not parse_calls and fmt != FUNCTIONARY_V32:  # its plain answers start with "all\n"
        fmt = CONTENT_ONLY
    parallel = (req.parallel_tool_calls if req.HasField("parallel_tool_calls")
                else template.caps.supports_parallel_tool_calls)
    start, end = reasoning_tags(fmt)
    opened = opens_thinking(prompt, start, end)
    grammar, lazy = "", None
    prefix = req.generation_prompt if req.HasField("generation_prompt") else ""
    if wants_calls and (choice.mode == "required" or native_fmt == GENERIC):
        allowed = [d for d in defs if choice.function in (None, d.name)]
        grammar = tool_call_grammar(native_fmt, allowed, parallel,
                                    allow_response=choice.mode != "required",
                                    prefix=end + "\n\n" if opened else "")
    elif wants_calls and parse_calls and (triggers := lazy_triggers(native_fmt, defs)):
        # "auto": constrained once a call starts
        grammar = tool_call_grammar(native_fmt, defs, parallel, lazy=True)
        lazy = LazySpec(triggers, (start, end) if reasoning != "none" else None)
    tags = None if skip_parsing else template_thinking_tags(template)
    lead = opened_lead(prompt, start) if opened else ""
    # the pinned llama-server parses deepseek-legacy as deepseek (its reasoning_in_content is
    # only echoed); a template without thinking tags gets no split
    split = "none" if tags is None else "deepseek" if reasoning == "deepseek-legacy" else reasoning
    # llama-server parses the prompt's end with the answer: unsplit, the block it opened is content
    unsplit_lead = start + lead if opened and split == "none" and tags and not prefix else ""
    config = ChatParseConfig(fmt, split, opened and split != "none" and not prefix,
                             max_calls=0 if parallel else 1, prefix=prefix,
                             thinking_ws=thinking_whitespace(tags), thinking_lead=lead,
                             skip_space=tags is not None and not opened, content_lead=unsplit_lead)
    return ChatSetup(config, grammar, _preserved(vocab, fmt) if config.active else frozenset(),
                     lazy,
                     _budget(req, template, vocab, native_fmt, opened, budget, budget_message,
                             forcing_grammar=bool(grammar) and lazy is None))


def _budget(req: Any, template: ChatTemplate, vocab: Vocab, fmt: str, opened: bool,
            budget: int, message: str | None, forcing_grammar: bool) -> BudgetSpec | None:
    """The thinking budget, for a template that has a thinking block (it writes the start tag
    or opened the block). A grammar forcing tool calls already skips the block, and forcing the
    end tag against it would break it: no budget then."""
    tags = reasoning_tags(fmt)
    if forcing_grammar or not (opened or tags[0] in template.source):
        return None

    def tokenize(text: str) -> list[int]:
        return vocab.tokenize(text, add_special=False, parse_special=True)

    return budget_spec(tokenize, vocab.token_to_piece, tags, opened, budget, message,
                       req.reasoning_control)


_PRESERVED: dict[tuple[int, str], frozenset[int]] = {}


def _preserved(vocab: Vocab, fmt: str) -> frozenset[int]:
    """The format's marker words that are single special tokens: rendered in the answer's
    text (as llama-server's preserved tokens), where they would otherwise vanish."""
    key = (id(vocab), fmt)
    found = _PRESERVED.get(key)
    if found is None:
        words = {*FORMATS[fmt].triggers, *reasoning_tags(fmt), "<|END_ACTION|>",
                 "<|END_RESPONSE|>"}
        ids = set()
        for word in words:
            tokens = vocab.tokenize(word, add_special=False, parse_special=True)
            if len(tokens) == 1 and vocab.is_control(tokens[0]) and not vocab.is_eog(tokens[0]):
                ids.add(tokens[0])
        found = _PRESERVED[key] = frozenset(ids)
    return found
