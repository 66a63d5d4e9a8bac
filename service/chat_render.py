"""A chat request's messages rendered into a prompt with the server's chat template."""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format

from service.engine.params import ParamError
from service.runtime import Runtime


def render_chat(rt: Runtime, request: Any) -> str:
    """The prompt text for a ChatCompletionRequest (also ApplyTemplate's answer).

    Raises ParamError for an empty conversation, TemplateError for one the template refuses.
    """
    messages = [json_format.MessageToDict(m, preserving_proto_field_name=True)
                for m in request.messages]
    for m, raw in zip(messages, request.messages, strict=True):
        if raw.HasField("content_parts"):
            m["content"] = m.pop("content_parts").get("parts", [])
    tools = [json_format.MessageToDict(t, preserving_proto_field_name=True)
             for t in request.tools] or None
    kwargs = (json_format.MessageToDict(request.chat_template_kwargs)
              if request.HasField("chat_template_kwargs") else {})
    add_gen = request.add_generation_prompt if request.HasField(
        "add_generation_prompt") else True
    if not messages:
        raise ParamError("messages must not be empty")
    # llama-server's prefill: a trailing assistant message is continued, not closed.
    prefill = rt.config.chat.prefill_assistant and messages[-1].get("role") == "assistant"
    template = rt.templates.for_request(tools)
    return template.render(messages, add_generation_prompt=add_gen and not prefill,
                           continue_final_message=prefill, tools=tools,
                           extra_context={**dict(rt.config.chat.template_kwargs), **kwargs})
