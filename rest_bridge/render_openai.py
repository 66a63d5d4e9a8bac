"""OpenAI-shaped JSON: `text_completion` objects (/v1/completions) from OpenAICompletionChunk
messages and `chat.completion(.chunk)` objects (/v1/chat/completions) from ChatCompletionChunk
messages, as llama-server writes them (plus its `timings`).

Streams end with `data: [DONE]`. A chat stream ends each choice with an empty delta carrying
`finish_reason`, then, with stream_options.include_usage, a chunk with no choices and the
`usage` (one, after every choice has finished), as OpenAI specifies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rest_bridge.jsonio import Json, dumps, dumps_str
from rest_bridge.shapes import (
    choices_per_prompt,
    probabilities_json,
    progress_json,
    sum_usage,
    timings_json,
    usage_json,
)


def _envelope(m: Any, obj: str) -> dict[str, Json]:
    return {"id": m.id, "object": obj, "created": m.created, "model": m.model,
            "system_fingerprint": m.system_fingerprint}


def _extras(m: Any, out: dict[str, Json]) -> dict[str, Json]:
    if m.HasField("timings"):
        out["timings"] = timings_json(m.timings)
    if m.HasField("prompt_progress"):
        out["prompt_progress"] = progress_json(m.prompt_progress)
    return out


def _logprobs(lp: Any) -> Json:
    return {"content": probabilities_json(lp.content)} if lp.content else None


def _finish(choice: Any) -> Json:
    return choice.finish_reason if choice.HasField("finish_reason") else None


def _prompt_of(m: Any, n: int, counted: int) -> int:
    """The prompt a final message's choice completed (choice index = prompt * n + j)."""
    return m.choices[0].index // n if m.choices else -1 - counted


class TextCompletionRenderer:
    """/v1/completions."""

    done_marker = True

    def __init__(self, request: Any = None) -> None:
        self._n = 1 if request is None else choices_per_prompt(request)

    def events(self, m: Any) -> list[Json]:
        out = _envelope(m, "text_completion")
        out["choices"] = [{"text": c.text, "index": c.index, "logprobs": _logprobs(c.logprobs),
                           "finish_reason": _finish(c)} for c in m.choices]
        if not any(c["text"] or c["logprobs"] or c["finish_reason"] for c in out["choices"]) \
                and not m.HasField("prompt_progress"):
            return []  # the "accepted" message: llama-server sends nothing for it
        if m.HasField("usage") and any(c["finish_reason"] for c in out["choices"]):
            out["usage"] = usage_json(m.usage)
        return [_extras(m, out)]

    def result(self, msgs: Sequence[Any]) -> Json:
        text: dict[int, list[str]] = {}
        probs: dict[int, list[Json]] = {}
        finish: dict[int, Json] = {}
        usages: list[dict[str, Json]] = []
        prompts: list[int] = []
        last = msgs[-1]
        for m in msgs:
            for c in m.choices:
                text.setdefault(c.index, []).append(c.text)
                probs.setdefault(c.index, []).extend(probabilities_json(c.logprobs.content))
                if c.HasField("finish_reason"):
                    finish[c.index] = c.finish_reason
            if m.HasField("usage"):
                prompts.append(_prompt_of(m, self._n, len(usages)))
                usages.append(usage_json(m.usage))
                last = m
        out = _envelope(last, "text_completion")
        out["choices"] = [{"text": "".join(text[i]), "index": i,
                           "logprobs": {"content": probs[i]} if probs[i] else None,
                           "finish_reason": finish.get(i, "stop")} for i in sorted(text)]
        out["usage"] = sum_usage(usages, prompts)
        if last.HasField("timings"):
            out["timings"] = timings_json(last.timings)
        return out


def _tool_call(tc: Any, with_index: bool) -> dict[str, Json]:
    """A tool call (with_index: a streamed delta of one, as OpenAI's: the first names the call,
    with its id, type, name and arguments ""; later ones carry argument pieces only, since
    clients such as the openai SDK concatenate every string they are sent)."""
    if with_index and not tc.id and not tc.function.name:
        out: dict[str, Json] = {"function": {"arguments": tc.function.arguments}}
    else:
        out = {"type": tc.type or "function",
               "function": {"name": tc.function.name, "arguments": tc.function.arguments}}
    if tc.id:
        out["id"] = tc.id
    if with_index and tc.HasField("index"):
        out = {"index": tc.index, **out}
    return out


def _content_only(m: Any, c: Any) -> bool:
    """Whether a chat chunk's event is its one choice's text and nothing else."""
    d = c.delta
    return (d.HasField("content") and not d.HasField("role")
            and not d.HasField("reasoning_content") and not d.tool_calls
            and not c.logprobs.content and not c.HasField("finish_reason")
            and not m.HasField("timings") and not m.HasField("prompt_progress"))


def delta_json(d: Any) -> dict[str, Json]:
    out: dict[str, Json] = {}
    if d.HasField("role"):
        out["role"] = d.role
        out["content"] = d.content if d.HasField("content") else None
    elif d.HasField("content"):
        out["content"] = d.content
    if d.HasField("reasoning_content"):
        out["reasoning_content"] = d.reasoning_content
    if d.tool_calls:
        out["tool_calls"] = [_tool_call(tc, True) for tc in d.tool_calls]
    return out


class _ChatMessage:
    """A whole assistant message put together from deltas (non-streaming answer)."""

    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.tool_calls: dict[int, dict[str, Json]] = {}
        self.probs: list[Json] = []

    def add(self, d: Any) -> None:
        if d.HasField("content"):
            self.content.append(d.content)
        if d.HasField("reasoning_content"):
            self.reasoning.append(d.reasoning_content)
        for n, tc in enumerate(d.tool_calls):
            key = tc.index if tc.HasField("index") else n
            call = self.tool_calls.get(key)
            if call is None:  # the first delta of a call names it; later ones add arguments
                self.tool_calls[key] = _tool_call(tc, False)
                continue
            if tc.id:
                call["id"] = tc.id
            function = call["function"]
            function["name"] = function["name"] or tc.function.name
            function["arguments"] += tc.function.arguments

    def json(self) -> dict[str, Json]:
        out: dict[str, Json] = {"role": "assistant", "content": "".join(self.content)}
        if self.reasoning:
            out["reasoning_content"] = "".join(self.reasoning)
        if self.tool_calls:
            out["tool_calls"] = [tc for _, tc in sorted(self.tool_calls.items())]
            if not out["content"]:
                out["content"] = None
        return out


class ChatRenderer:
    """/v1/chat/completions and /chat/completions."""

    done_marker = True

    def __init__(self, request: Any) -> None:
        self._include_usage = bool(request.stream_options.include_usage)
        self._n = choices_per_prompt(request)
        self._usages: list[dict[str, Json]] = []  # the finished choices' (stream)
        self._heads: dict[tuple[Any, ...], bytes] = {}  # _content_event's, per envelope

    def events(self, m: Any) -> list[Json]:
        if len(m.choices) == 1 and _content_only(m, m.choices[0]):
            return [self._content_event(m, m.choices[0])]
        events: list[Json] = []
        finishing: list[Any] = []
        for c in m.choices:
            delta = delta_json(c.delta)
            if delta or c.logprobs.content:
                choice: dict[str, Json] = {"finish_reason": None, "index": c.index,
                                           "delta": delta}
                if c.logprobs.content:
                    choice["logprobs"] = _logprobs(c.logprobs)
                events.append({**_envelope(m, "chat.completion.chunk"), "choices": [choice]})
            if c.HasField("finish_reason"):
                finishing.append(c)
        for c in finishing:
            events.append({**_envelope(m, "chat.completion.chunk"), "choices": [
                {"finish_reason": c.finish_reason, "index": c.index, "delta": {}}]})
        if finishing and self._include_usage and m.HasField("usage"):
            # one usage chunk, once every choice has finished, counted as the answer's is
            # (llama-server sends one per choice: a deliberate difference, docs/fidelity.md)
            self._usages.append(usage_json(m.usage))
            if len(self._usages) == self._n:
                events.append({**_envelope(m, "chat.completion.chunk"), "choices": [],
                               "usage": sum_usage(self._usages, [0] * self._n)})
        if events:
            _extras(m, events[-1])
        elif m.HasField("prompt_progress"):
            events.append(_extras(m, {**_envelope(m, "chat.completion.chunk"), "choices": []}))
        return events

    def _content_event(self, m: Any, c: Any) -> bytes:
        """A chunk carrying only text (most of a stream's) as its JSON text: the stream's
        constant envelope written once, then only the text. The same bytes as the general
        path's event gives (tests/rest/test_rest_units.py): through Envoy the service renders
        every chunk on the event loop whose GIL the engine thread needs."""
        key = (m.id, m.created, m.model, m.system_fingerprint, c.index)
        head = self._heads.get(key)
        if head is None:
            envelope = dumps(_envelope(m, "chat.completion.chunk"))
            head = self._heads[key] = (envelope[:-1] + b',"choices":[{"finish_reason":null,'
                                       b'"index":' + str(c.index).encode() +
                                       b',"delta":{"content":')
        return head + dumps_str(c.delta.content) + b"}}]}"

    def result(self, msgs: Sequence[Any]) -> Json:
        messages: dict[int, _ChatMessage] = {}
        whole: dict[int, Any] = {}
        finish: dict[int, Json] = {}
        usages: list[dict[str, Json]] = []
        prompts: list[int] = []
        last = msgs[-1]
        for m in msgs:
            for c in m.choices:
                msg = messages.setdefault(c.index, _ChatMessage())
                if c.HasField("message"):
                    whole[c.index] = c.message
                msg.add(c.delta)
                msg.probs.extend(probabilities_json(c.logprobs.content))
                if c.HasField("finish_reason"):
                    finish[c.index] = c.finish_reason
            if m.HasField("usage"):
                prompts.append(_prompt_of(m, self._n, len(usages)))
                usages.append(usage_json(m.usage))
                last = m
        choices = []
        for i in sorted(messages):
            message = _whole_message(whole[i]) if i in whole else messages[i].json()
            choice: dict[str, Json] = {"finish_reason": finish.get(i, "stop"), "index": i,
                                       "message": message}
            if messages[i].probs:
                choice["logprobs"] = {"content": messages[i].probs}
            choices.append(choice)
        out = {**_envelope(last, "chat.completion"), "choices": choices,
               "usage": sum_usage(usages, prompts)}
        return _extras(last, out) if last.HasField("timings") else out


def _whole_message(msg: Any) -> dict[str, Json]:
    out: dict[str, Json] = {"role": msg.role or "assistant",
                            "content": msg.content if msg.HasField("content") else None}
    if msg.HasField("reasoning_content") and msg.reasoning_content:
        out["reasoning_content"] = msg.reasoning_content
    if msg.tool_calls:
        out["tool_calls"] = [_tool_call(tc, False) for tc in msg.tool_calls]
    elif out["content"] is None:
        out["content"] = ""
    return out
