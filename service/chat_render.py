"""A chat request's messages rendered into a prompt with the server's chat template.

A conversation may end with an assistant message to continue (llama-server's prefill: by
default, with --prefill-assistant, or asked with continue_final_message): the prompt then ends
inside that message, and the message's text is the answer's start. llama-server parses it
before the generated text, so the answer (non-streaming) includes it; a stream sends it in its
first delta for a prefill, not for continue_final_message (unless `echo`).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, replace
from typing import Any

from google.protobuf import json_format

from service.chat_template import ChatTemplate
from service.chat_template_errors import TemplateError
from service.engine.params import ParamError
from service.prompt_values import value_to_json
from service.prompts import Json
from service.runtime import Runtime
from service.server_info import MEDIA_MARKER
from service.thinking_tags import template_thinking_tags
from service.tool_calls import ChatSetup
from service.tool_choice import tool_choice_of
from service.typed_inputs import role_of, tool_json


@dataclass(frozen=True)
class RenderedChat:
    prompt: str
    prefill: str | None = None  # the continued message's text, the answer's start
    echo: bool = False  # a stream sends the prefill too (its first delta)


def render_chat(rt: Runtime, request: Any) -> str:
    """The prompt text for a ChatCompletionRequest (also ApplyTemplate's answer)."""
    return render_chat_full(rt, request).prompt


def render_chat_full(rt: Runtime, request: Any) -> RenderedChat:
    """The prompt of a ChatCompletionRequest, and what it prefills of the answer.

    Raises ParamError for an empty conversation, a bad tool choice or a grammar beside tools
    (as llama-server, for both routes), TemplateError for one the template refuses.
    """
    messages = [_with_markers(_message_json(m)) for m in request.messages]
    tools = [tool_json(t) for t in request.tools] or None
    choice = tool_choice_of(request)  # checked even without tools, as llama-server does
    if tools and choice.mode != "none" and request.HasField("grammar"):
        raise ParamError("Cannot use custom grammar constraints with tools.")
    add_gen = request.add_generation_prompt if request.HasField(
        "add_generation_prompt") else True
    if not messages:
        raise ParamError("messages must not be empty")
    mode = _continuation(request, messages, add_gen)
    echo = mode is None or request.echo
    if mode is None and rt.config.chat.prefill_assistant and _role(messages, -1) == "assistant":
        if _role(messages, -2) == "assistant":
            raise ParamError("Cannot have 2 or more assistant messages at the end of the list.",
                             field="messages")
        mode = "auto"
    template = rt.templates.for_request(tools)
    extra = _template_kwargs(rt, request)
    if tools and " functools[" in template.source:  # Firefunction v2 reads them as `functions`
        extra.setdefault("functions", json.dumps(tools, indent=2))
    if mode is None:
        return RenderedChat(template.render(messages, add_generation_prompt=add_gen,
                                            tools=tools, extra_context=extra))
    tags = template_thinking_tags(template)
    continued = template.render_continued(messages, tools=tools, extra_context=extra,
                                          mode=mode, reasoning_tags=tags)
    return RenderedChat(continued.prompt, continued.answer, echo)


def _template_kwargs(rt: Runtime, request: Any) -> dict[str, Any]:
    """The template's extra context: the server's --chat-template-kwargs, then the request's."""
    kwargs = (json_format.MessageToDict(request.chat_template_kwargs)
              if request.HasField("chat_template_kwargs") else {})
    return {**dict(rt.config.chat.template_kwargs), **kwargs}


@functools.lru_cache(maxsize=64)
def _probe_generation_prompt(template: ChatTemplate, extra_json: str) -> str:
    return template.generation_prompt([{"role": "user", "content": "x"}],
                                      extra_context=json.loads(extra_json))


def template_generation_prompt(rt: Runtime, request: Any, tools: Any) -> str:
    """What the template's add_generation_prompt appends, as llama-server echoes it in a chat
    request's settings (`generation_prompt`). Rendered once per template and template kwargs
    on a one-message probe (two renders a request would cost every chat request's first
    token), which is what the header is for the templates we know."""
    extra = _template_kwargs(rt, request)
    try:
        return _probe_generation_prompt(rt.templates.for_request(tools),
                                        json.dumps(extra, sort_keys=True))
    except TemplateError:  # a template that needs more than a probe: no echo, not a failure
        return ""


def with_prefill(setup: ChatSetup, rendered: RenderedChat) -> ChatSetup:
    """The chat setup parsing the prefilled text as the answer's start."""
    if rendered.prefill is None:
        return setup
    # the prefill holds the thinking tag when the template opens one: not opened by the prompt
    parse = replace(setup.parse, prefix=setup.parse.prefix + rendered.prefill,
                    thinking_opened=False, echo_prefix=rendered.echo)
    return replace(setup, parse=parse)


def _role(messages: list[dict[str, Json]], i: int) -> Json:
    return messages[i].get("role") if len(messages) >= abs(i) else None


def _continuation(request: Any, messages: list[dict[str, Json]], add_gen: bool) -> str | None:
    """How the request's continue_final_message asks to continue the last message ("auto",
    "content", "reasoning"; None: it does not), with llama-server's checks
    (common_chat_continuation_parse and the OpenAI chat parser)."""
    if not request.HasField("continue_final_message"):
        return None
    value = value_to_json(request, "continue_final_message")
    modes: dict[Json, str] = {"content": "content", "reasoning_content": "reasoning"}
    mode = "auto" if value is True else modes.get(value) if isinstance(value, str) else None
    if mode is None:
        return None  # llama-server reads any other value as no continuation
    if add_gen:
        raise ParamError("Cannot set both add_generation_prompt and continue_final_message "
                         "to true.", field="continue_final_message")
    if messages[-1].get("role") == "assistant" and messages[-1].get("tool_calls"):
        raise ParamError("Cannot continue an assistant message that contains tool calls.",
                         field="continue_final_message")
    return mode


_MEDIA_PARTS = ("image_url", "input_audio")


def _with_markers(message: dict[str, Json]) -> dict[str, Json]:
    """Each image or audio part as the media marker the template renders in its place, as
    llama-server does (the media themselves were checked and are tokenized by the projector:
    service/media_prompt.py)."""
    content = message.get("content")
    if isinstance(content, list) and any(
            isinstance(p, dict) and p.get("type") in _MEDIA_PARTS for p in content):
        message["content"] = [{"type": "media_marker", "text": MEDIA_MARKER}
                              if isinstance(p, dict) and p.get("type") in _MEDIA_PARTS else p
                              for p in content]
    return message


def _message_json(raw: Any) -> dict[str, Json]:
    """One message as OpenAI JSON: typed content parts as `content`, `typed_role` as `role`."""
    m: dict[str, Json] = json_format.MessageToDict(raw, preserving_proto_field_name=True)
    if raw.HasField("content_parts"):
        m["content"] = m.pop("content_parts").get("parts", [])
    m.pop("typed_role", None)
    role = role_of(raw)
    if role:
        m["role"] = role
    return m
