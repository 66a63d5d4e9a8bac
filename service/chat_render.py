"""A chat request's messages rendered into a prompt with the server's chat template."""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format

from service.engine.params import ParamError
from service.prompt_values import value_to_json
from service.prompts import Json
from service.runtime import Runtime
from service.tool_choice import tool_choice_of
from service.typed_inputs import role_of, tool_json


def render_chat(rt: Runtime, request: Any) -> str:
    """The prompt text for a ChatCompletionRequest (also ApplyTemplate's answer).

    Raises ParamError for an empty conversation, a bad tool choice or a grammar beside tools
    (as llama-server, for both routes), TemplateError for one the template refuses.
    """
    messages = [_message_json(m) for m in request.messages]
    tools = [tool_json(t) for t in request.tools] or None
    choice = tool_choice_of(request)  # checked even without tools, as llama-server does
    if tools and choice.mode != "none" and request.HasField("grammar"):
        raise ParamError("Cannot use custom grammar constraints with tools.")
    kwargs = (json_format.MessageToDict(request.chat_template_kwargs)
              if request.HasField("chat_template_kwargs") else {})
    add_gen = request.add_generation_prompt if request.HasField(
        "add_generation_prompt") else True
    if not messages:
        raise ParamError("messages must not be empty")
    continued = _continuation(request, messages, add_gen)
    # llama-server's prefill: a trailing assistant message is continued, not closed.
    prefill = continued or (rt.config.chat.prefill_assistant
                            and messages[-1].get("role") == "assistant")
    template = rt.templates.for_request(tools)
    extra = {**dict(rt.config.chat.template_kwargs), **kwargs}
    if tools and " functools[" in template.source:  # Firefunction v2 reads them as `functions`
        extra.setdefault("functions", json.dumps(tools, indent=2))
    return template.render(messages, add_generation_prompt=add_gen and not prefill,
                           continue_final_message=prefill, tools=tools, extra_context=extra)


def _continuation(request: Any, messages: list[dict[str, Json]], add_gen: bool) -> bool:
    """Whether the request's continue_final_message asks to continue the last message, with
    llama-server's checks (common_chat_continuation_parse and the OpenAI chat parser)."""
    if not request.HasField("continue_final_message"):
        return False
    value = value_to_json(request, "continue_final_message")
    if value == "reasoning_content":
        raise ParamError('continue_final_message "reasoning_content" is not supported yet: '
                         'continue the answer (true or "content")',
                         field="continue_final_message")
    if value is not True and value != "content":
        return False  # llama-server reads any other value as no continuation
    if add_gen:
        raise ParamError("Cannot set both add_generation_prompt and continue_final_message "
                         "to true.", field="continue_final_message")
    if messages[-1].get("role") == "assistant" and messages[-1].get("tool_calls"):
        raise ParamError("Cannot continue an assistant message that contains tool calls.",
                         field="continue_final_message")
    return True


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
