"""llama-server's native completion JSON (/completion, /completions, /infill) from
CompletionChunk messages.

Streaming: one event per message with text or tokens (`stop` false), then the final object.
Not streaming: one final object per prompt with the whole `content` (`tokens` only with
return_tokens, `completion_probabilities` when n_probs asked for them); several prompts give
a JSON array. No `id` key (llama-server's objects have none): the generation's id is the
response's X-Request-Id header. `response_fields` picks fields of the final object: `a/b` is
the value at that path, kept under the literal key "a/b" (as the pinned llama-server keeps it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rest_bridge.jsonio import Json, dumps_str, settings_json
from rest_bridge.shapes import probabilities_json, progress_json, timings_json


def partial_json(m: Any) -> dict[str, Json]:
    out: dict[str, Json] = {
        "index": m.index, "content": m.content, "tokens": list(m.tokens), "stop": False,
        "id_slot": m.id_slot, "tokens_predicted": m.tokens_predicted,
        "tokens_evaluated": m.tokens_evaluated,
    }
    if m.HasField("timings"):
        out["timings"] = timings_json(m.timings)
    if m.HasField("prompt_progress"):
        out["prompt_progress"] = progress_json(m.prompt_progress)
    if m.completion_probabilities:
        out["completion_probabilities"] = probabilities_json(m.completion_probabilities)
    return out


def partial_bytes(m: Any, content: str, tokens: Sequence[int]) -> bytes:
    """partial_json's JSON text for a message with nothing but its fixed keys (most of a
    stream's), written directly: the same bytes (tests/test_envoy_stream.py) in a third of the
    time; through Envoy the service renders every event on the event loop whose GIL the engine
    thread needs."""
    return (b'{"index":%d,"content":%s,"tokens":[%s],"stop":false,"id_slot":%d,'
            b'"tokens_predicted":%d,"tokens_evaluated":%d}'
            % (m.index, dumps_str(content), ",".join(map(str, tokens)).encode(),
               m.id_slot, m.tokens_predicted, m.tokens_evaluated))


def final_json(m: Any, content: str, tokens: list[int], has_new_line: bool,
               probs: list[dict[str, Json]] | None) -> dict[str, Json]:
    out: dict[str, Json] = {
        "index": m.index, "content": content, "tokens": tokens, "id_slot": m.id_slot,
        "stop": True, "model": m.model, "tokens_predicted": m.tokens_predicted,
        "tokens_evaluated": m.tokens_evaluated,
        "generation_settings": settings_json(m.generation_settings), "prompt": m.prompt,
        "has_new_line": m.has_new_line if m.HasField("has_new_line") else has_new_line,
        "truncated": m.truncated, "stop_type": m.stop_type, "stopping_word": m.stopping_word,
        "tokens_cached": m.tokens_cached, "timings": timings_json(m.timings),
    }
    if probs:
        out["completion_probabilities"] = probs
    return out


def pick_fields(obj: dict[str, Json], paths: Sequence[str]) -> dict[str, Json]:
    """llama-server's response_fields: keep the listed paths, each under its own name (`a/b`
    too); missing paths are left out silently."""
    if not paths:
        return obj
    out: dict[str, Json] = {}
    for path in paths:
        value: Json = obj
        for part in path.split("/"):
            if not isinstance(value, dict) or part not in value:
                break
            value = value[part]
        else:
            out[path] = value
    return out


def _is_silent(m: Any) -> bool:
    # The first message only says the request was accepted; llama-server sends nothing then.
    return not (m.content or m.tokens or m.HasField("prompt_progress")
                or m.completion_probabilities or m.HasField("timings"))


class NativeRenderer:
    """Renders one request's CompletionChunk messages."""

    done_marker = False

    def __init__(self, request: Any) -> None:
        self._return_tokens = bool(request.return_tokens)
        self._fields = tuple(request.response_fields)
        self._new_line: set[int] = set()

    def events(self, m: Any) -> list[Json]:
        content = m.content  # each read of a field builds a new str
        if "\n" in content:
            self._new_line.add(m.index)
        if m.stop:
            final = final_json(m, content, list(m.tokens), m.index in self._new_line, None)
            return [pick_fields(final, self._fields)]
        if m.HasField("timings") or m.HasField("prompt_progress") or m.completion_probabilities:
            return [partial_json(m)]
        tokens = m.tokens
        if not (content or tokens):  # _is_silent: the "accepted" message
            return []
        return [partial_bytes(m, content, tokens)]

    def result(self, msgs: Sequence[Any]) -> Json:
        by_index: dict[int, list[Any]] = {}
        for m in msgs:
            by_index.setdefault(m.index, []).append(m)
        results = [self._one(by_index[i]) for i in sorted(by_index)]
        return results[0] if len(results) == 1 else results

    def _one(self, msgs: list[Any]) -> dict[str, Json]:
        # The service may send the text in pieces before the final message, or all of it in
        # the final message; concatenating every message's share covers both.
        content = "".join(m.content for m in msgs)
        tokens = [t for m in msgs for t in m.tokens] if self._return_tokens else []
        probs = [p for m in msgs for p in probabilities_json(m.completion_probabilities)]
        final = next((m for m in reversed(msgs) if m.stop), msgs[-1])
        obj = final_json(final, content, tokens, "\n" in content, probs)
        return pick_fields(obj, self._fields)
