"""Chat templates: turn OpenAI-style messages into the prompt text a model expects.

A :class:`ChatTemplate` is compiled once from Jinja source (a GGUF's
``tokenizer.chat_template``, or ``--chat-template`` / ``--chat-template-file``) and the
model's BOS/EOS strings, then rendered per request.  It renders the way llama-server's
Jinja mode does:

* the template runs in a sandbox configured like Hugging Face transformers' (see
  :mod:`service.chat_template_sandbox`), with a time and output bound;
* it sees ``messages``, ``add_generation_prompt``, ``bos_token``, ``eos_token``,
  ``enable_thinking``, ``tools`` (only when tools are given), ``datetime`` /
  ``date_string``, the ``strftime_now(fmt)`` and ``raise_exception(msg)`` functions, and
  the request's ``chat_template_kwargs`` (``preserve_reasoning`` and
  ``reasoning_effort`` are also exposed under the other names templates use);
* messages are validated and shaped for what the template can handle (see
  :mod:`service.chat_template_messages`), which is probed once at compile time
  (:mod:`service.chat_template_caps`);
* a leading BOS (trailing EOS) the template writes is dropped when the tokenizer adds
  its own.

Every failure (bad Jinja, invalid messages, a template calling ``raise_exception``, a
sandbox violation, a runaway template) raises :class:`TemplateError`, a ``ValueError``
the service maps to INVALID_ARGUMENT.

:func:`load_chat_templates` picks the sources like llama-server: the override if given
(Jinja source, or one of llama.cpp's built-in names, see
:mod:`service.chat_template_builtins`), else the model's templates, and **ChatML when the
model has no template**.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any

import jinja2
from jinja2.exceptions import SecurityError

from service.chat_template_builtins import CHATML_TEMPLATE, builtin_template, is_jinja_source
from service.chat_template_caps import preserve_reasoning_flags, probe_caps, reasoning_effort_vars
from service.chat_template_errors import TemplateError, TemplateLimitError, TemplateSecurityError
from service.chat_template_limits import DEFAULT_LIMITS, RenderLimits, render_bounded
from service.chat_template_messages import (
    ChatMessage,
    TemplateCaps,
    messages_for_template,
    parse_messages,
    parse_tools,
)
from service.chat_template_sandbox import ChatTemplateSandbox, strftime_now_at

__all__ = [
    "ChatMessage",
    "ChatTemplate",
    "ChatTemplates",
    "Continued",
    "RenderLimits",
    "TemplateCaps",
    "TemplateError",
    "TemplateLimitError",
    "TemplateSecurityError",
    "load_chat_templates",
    "resolve_template_source",
]


def _template_line(exc: BaseException) -> int | None:
    """The template line being run when ``exc`` was raised (jinja rewrites tracebacks)."""
    line = None
    tb: TracebackType | None = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _render_error(exc: Exception) -> TemplateError:
    line = _template_line(exc)
    where = f" (template line {line})" if line is not None else ""
    if isinstance(exc, SecurityError):
        return TemplateSecurityError(f"chat template tried a forbidden operation{where}: {exc}")
    if isinstance(exc, RecursionError):
        return TemplateLimitError(f"chat template recursed too deeply{where}")
    return TemplateError(f"chat template failed to render{where}: {type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class Continued:
    """A conversation rendered to continue its last message (ChatTemplate.render_continued)."""

    prompt: str
    answer: str  # the prompt's tail that is the answer's start (the prefilled message)


def _common_prefix_len(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass(frozen=True)
class ChatTemplate:
    """A compiled chat template; build with :meth:`compile`, share across requests."""

    source: str
    bos_token: str
    eos_token: str
    caps: TemplateCaps
    # The tokenizer adds BOS/EOS itself, so a template's own copies are dropped.
    add_bos: bool = False
    add_eos: bool = False
    limits: RenderLimits = DEFAULT_LIMITS
    _template: jinja2.Template | None = field(default=None, repr=False, compare=False)

    @classmethod
    def compile(
        cls,
        source: str,
        *,
        bos_token: str = "",
        eos_token: str = "",
        add_bos: bool = False,
        add_eos: bool = False,
        limits: RenderLimits = DEFAULT_LIMITS,
    ) -> ChatTemplate:
        """Compile Jinja ``source`` and probe its capabilities; TemplateError if invalid."""
        env = ChatTemplateSandbox(limits)
        try:
            template = env.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(
                f"chat template has a syntax error at line {exc.lineno}: {exc.message}"
            ) from exc
        except Exception as exc:  # e.g. an extension rejecting a tag
            raise TemplateError(f"chat template failed to compile: {exc}") from exc

        limit_hit: list[TemplateLimitError] = []

        def probe(context: dict[str, Any]) -> str | None:
            if limit_hit:  # a runaway template: don't wait out every probe's deadline
                return None
            try:
                return render_bounded(template, context, limits)
            except TemplateLimitError as exc:
                limit_hit.append(exc)
                return None
            except Exception:
                return None

        caps = probe_caps(probe)
        return cls(source, bos_token, eos_token, caps, add_bos, add_eos, limits, template)

    def render(
        self,
        messages: Sequence[Mapping[str, Any] | ChatMessage],
        *,
        add_generation_prompt: bool = True,
        tools: Sequence[Any] | None = None,
        extra_context: Mapping[str, Any] | None = None,
        enable_thinking: bool = True,
        continue_final_message: bool = False,
        reasoning_tags: tuple[str, str] | None = None,
        now: datetime | None = None,
    ) -> str:
        """Render ``messages`` (OpenAI JSON objects or :class:`ChatMessage`) to a prompt.

        ``tools`` is the OpenAI ``tools`` array; ``extra_context`` the request's
        ``chat_template_kwargs`` (merged over the defaults, so it may also set
        ``enable_thinking``); ``now`` fixes the clock for ``strftime_now`` and the date
        variables.  ``continue_final_message``
        renders the conversation up to the last (assistant) message, then appends that
        message's text so generation continues it, as llama-server's assistant prefill
        does; ``reasoning_tags`` (start, end) are the template's thinking tags, if it has
        any, so that a prefilled ``reasoning_content`` lands inside them.
        """
        if continue_final_message:
            if add_generation_prompt:
                raise TemplateError(
                    "Cannot set both add_generation_prompt and continue_final_message to true."
                )
            return self.render_continued(
                messages, tools=tools, extra_context=extra_context,
                enable_thinking=enable_thinking, reasoning_tags=reasoning_tags, now=now,
            ).prompt  # fmt: skip
        return self._render(
            parse_messages(messages), parse_tools(tools), add_generation_prompt,
            extra_context, enable_thinking, now or datetime.now(),
        )  # fmt: skip

    def render_continued(
        self,
        messages: Sequence[Mapping[str, Any] | ChatMessage],
        *,
        tools: Sequence[Any] | None = None,
        extra_context: Mapping[str, Any] | None = None,
        enable_thinking: bool = True,
        mode: str = "auto",
        reasoning_tags: tuple[str, str] | None = None,
        now: datetime | None = None,
    ) -> Continued:
        """The prompt continuing the last (assistant) message, and that message as the
        answer's start (llama-server parses it before the generated text, so the answer
        includes it).

        ``mode`` is llama-server's continuation: "content" continues the answer (the
        thinking block, if the template has one, closed first); "reasoning" continues
        inside the thinking block (the message's content is dropped); "auto" is
        "reasoning" for a message with reasoning_content and no content, else "content".
        """
        parsed = parse_messages(messages)
        if not parsed or parsed[-1].role != "assistant":
            raise TemplateError("continue_final_message needs a final assistant message")
        last, history = parsed[-1], parsed[:-1]
        if last.tool_calls:
            raise TemplateError("Cannot continue an assistant message that contains tool calls.")
        if mode == "reasoning" and reasoning_tags is None:
            raise TemplateError(
                'continue_final_message "reasoning_content": the chat template has no '
                "thinking block to continue"
            )
        specs, now = parse_tools(tools), now or datetime.now()
        before = self._render(history, specs, False, extra_context, enable_thinking, now)
        after = self._render(history, specs, True, extra_context, enable_thinking, now)
        head, answer = _continuation(
            after[_common_prefix_len(before, after) :], last, mode, reasoning_tags
        )
        return Continued(before + head + answer, answer)

    def generation_prompt(
        self,
        messages: Sequence[Mapping[str, Any] | ChatMessage],
        *,
        tools: Sequence[Any] | None = None,
        extra_context: Mapping[str, Any] | None = None,
        enable_thinking: bool = True,
        now: datetime | None = None,
    ) -> str:
        """What ``add_generation_prompt`` appends (e.g. ``<|im_start|>assistant\\n``)."""
        parsed, specs, now = parse_messages(messages), parse_tools(tools), now or datetime.now()
        without = self._render(parsed, specs, False, extra_context, enable_thinking, now)
        with_prompt = self._render(parsed, specs, True, extra_context, enable_thinking, now)
        return with_prompt[_common_prefix_len(without, with_prompt) :]

    def _render(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[Any],
        add_generation_prompt: bool,
        extra_context: Mapping[str, Any] | None,
        enable_thinking: bool,
        now: datetime,
    ) -> str:
        assert self._template is not None, "build ChatTemplate with ChatTemplate.compile()"
        context = self._context(messages, tools, extra_context, enable_thinking, now)
        context["add_generation_prompt"] = add_generation_prompt
        try:
            text = render_bounded(self._template, context, self.limits)
        except TemplateError:
            raise
        except Exception as exc:
            raise _render_error(exc) from exc
        if self.add_bos and self.bos_token and text.startswith(self.bos_token):
            text = text[len(self.bos_token) :]
        if self.add_eos and self.eos_token and text.endswith(self.eos_token):
            text = text[: -len(self.eos_token)]
        return text

    def _context(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[Any],
        extra_context: Mapping[str, Any] | None,
        enable_thinking: bool,
        now: datetime,
    ) -> dict[str, Any]:
        context: dict[str, Any] = {
            # GPT-OSS templates know the developer role; everyone else gets "system".
            "messages": messages_for_template(
                messages, self.caps, keep_developer_role="<|channel|>" in self.source
            ),
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "enable_thinking": enable_thinking,
            "datetime": now.strftime("%b %d %Y"),
            "date_string": now.strftime("%d %b %Y"),
            "strftime_now": strftime_now_at(now),
        }
        if tools:
            context["tools"] = [tool.to_template() for tool in tools]
        if extra_context:
            context.update(copy.deepcopy(dict(extra_context)))
        preserve = context.get("preserve_reasoning")
        if isinstance(preserve, bool):
            context.update(preserve_reasoning_flags(preserve))
        effort = context.get("reasoning_effort")
        if isinstance(effort, str) and effort:
            context.update(reasoning_effort_vars(effort))
        return context


def _continuation(
    generation_prompt: str, message: ChatMessage, mode: str,
    reasoning_tags: tuple[str, str] | None,
) -> tuple[str, str]:
    """(head, answer): the text after the history when continuing ``message`` is ``head``
    (the generation prompt, up to its thinking tag) then ``answer``, as llama-server's
    prefill builds it."""
    content = message.text()
    if mode == "auto":
        mode = "reasoning" if message.reasoning_content and not content else "content"
    if reasoning_tags is None:
        return generation_prompt, content
    start, end = reasoning_tags
    cut = generation_prompt.find(start)
    head = generation_prompt if cut < 0 else generation_prompt[:cut]
    answer = start + message.reasoning_content
    if mode == "reasoning":
        return head, answer
    return head, answer + end + content


# Checks in published templates that llama-server disables because they reject
# conversations it produces (llama-server's chat.cpp does the same replacement).
_SOURCE_WORKAROUNDS: tuple[tuple[str, str], ...] = (
    (  # GPT-OSS: prior assistant turns may legitimately carry channel tags
        '{%- if "<|channel|>analysis<|message|>" in message.content or '
        '"<|channel|>final<|message|>" in message.content %}',
        "{%- if false %}",
    ),
    (  # Ministral 3: an assistant turn holding only reasoning has empty content
        "{%- if (message['content'] is none or message['content'] == '' or "
        "message['content']|length == 0) and (message['tool_calls'] is not defined or "
        "message['tool_calls'] is none or message['tool_calls']|length == 0) %}",
        "{%- if false %}",
    ),
)


def resolve_template_source(text: str | None) -> str:
    """Jinja source for ``text``: Jinja as is, a built-in name's equivalent, or ChatML
    when empty (no template in the model)."""
    if not text or not text.strip() or text.strip() == "chatml":
        return CHATML_TEMPLATE
    if not is_jinja_source(text):
        return builtin_template(text)
    for needle, replacement in _SOURCE_WORKAROUNDS:
        text = text.replace(needle, replacement)
    return text


@dataclass(frozen=True)
class ChatTemplates:
    """A model's templates: the default one and, if it has one, a tool-use variant."""

    default: ChatTemplate
    tool_use: ChatTemplate | None = None
    # False when neither the model nor the command line supplied a template (ChatML).
    explicit: bool = True

    def for_request(self, tools: Sequence[Any] | None) -> ChatTemplate:
        """The template to use: the tool-use variant when tools are given and it exists."""
        if tools and self.tool_use is not None:
            return self.tool_use
        return self.default


def load_chat_templates(
    *,
    override: str | None = None,
    model_template: str | None = None,
    model_tool_use_template: str | None = None,
    bos_token: str = "",
    eos_token: str = "",
    add_bos: bool = False,
    add_eos: bool = False,
    limits: RenderLimits = DEFAULT_LIMITS,
) -> ChatTemplates:
    """Choose and compile templates as llama-server does.

    ``override`` (``--chat-template`` value or ``--chat-template-file`` contents) wins
    over the model's ``tokenizer.chat_template``; ``model_tool_use_template`` is the GGUF's
    ``tokenizer.chat_template.tool_use`` (ignored with an override).  With no template at
    all, or the name ``chatml``, the model's tool-use template stands in if present, else
    ChatML.  A tool-use template that fails to compile is dropped, as llama-server does.
    """
    tool_use_src = None if override else (model_tool_use_template or None)
    default_src = override or model_template or ""
    explicit = bool(override or model_template or tool_use_src)
    if (not default_src.strip() or default_src.strip() == "chatml") and tool_use_src:
        default_src = tool_use_src

    def build(src: str) -> ChatTemplate:
        return ChatTemplate.compile(
            resolve_template_source(src),
            bos_token=bos_token,
            eos_token=eos_token,
            add_bos=add_bos,
            add_eos=add_eos,
            limits=limits,
        )

    tool_use = None
    if tool_use_src:
        try:
            tool_use = build(tool_use_src)
        except TemplateError:
            tool_use = None
    return ChatTemplates(build(default_src), tool_use, explicit)
