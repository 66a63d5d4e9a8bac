"""How two answers to the same request are compared: llama-server's (the reference) and ours.

Pure logic, no servers. An answer is its status, its content type and its body: JSON, an SSE
stream (a list of events, each JSON or the literal `[DONE]`), or text. JSON is compared whole:
the same keys, the same JSON types (an integer where llama-server writes 1.0 is a difference:
typed clients see it), the same array lengths and the same values, except where a value cannot
be the same from one run or one server to the next (VOLATILE: ids, clocks, timings, build
strings) — there only the type is compared. Numbers are equal within 1e-6 relative (float32
settings printed through double).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# Keys whose values differ between runs or servers by nature; their types are still compared.
VOLATILE = frozenset({
    "id", "created", "system_fingerprint", "timings", "id_slot", "t_start_prompt_processing",
    "completion_id", "build_info", "total_slots", "id_task", "n_decoded", "time_ms",
    # how much of a prompt was cached depends on which slot each server picked for it, and on
    # llama-server's RAM prompt cache, which we do not have
    "tokens_cached", "cached_tokens", "timings/prompt_n",
    "media_marker",  # random per process
})
# Keys compared by presence and type only, because they name the model file or the build
# (llama-server's `model` is the path; ours too, but both may be aliased).
NAMES = frozenset({"model", "model_path", "owned_by", "name", "path"})


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str  # without parameters
    body: Any  # parsed JSON; list of SSE events; or text
    kind: str  # "json", "sse" or "text"


def parse_answer(status: int, content_type: str, raw: bytes) -> Answer:
    media = content_type.split(";")[0].strip()
    text = raw.decode("utf-8", errors="replace")
    if media == "text/event-stream":
        return Answer(status, media, sse_events(text), "sse")
    try:
        return Answer(status, media, json.loads(text), "json")
    except ValueError:
        return Answer(status, media, text, "text")


def sse_events(text: str) -> list[Any]:
    """The data of each SSE event, JSON-decoded where it is JSON; comments (pings) dropped."""
    events: list[Any] = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        data = [line[5:].lstrip(" ") for line in block.split("\n") if line.startswith("data:")]
        if not data:
            continue
        payload = "\n".join(data)
        try:
            events.append(json.loads(payload))
        except ValueError:
            events.append(payload)
    return events


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float" if not v.is_integer() else "float(int)"
    return type(v).__name__


def _same_number(a: float, b: float, tolerance: float = 0.0) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or abs(a - b) <= max(1e-6 * max(abs(a), abs(b)), tolerance)


def _types_match(ref: Any, ours: Any) -> bool:
    # llama-server writes floats with a fraction digit or an exponent; 1.0 parses as a float.
    # An int where it writes a float (or the reverse) is a difference.
    rt, ot = _json_type(ref), _json_type(ours)
    return rt == ot or {rt, ot} <= {"float", "float(int)"}


def diff_json(ref: Any, ours: Any, path: str = "$", values: bool = True,
              tolerance: float = 0.0) -> Iterator[str]:
    """Every difference between llama-server's JSON and ours, as `path: what`; numbers may
    differ by `tolerance` (absolute) besides the relative 1e-6."""
    if not _types_match(ref, ours):
        yield f"{path}: type {_json_type(ours)} (llama-server: {_json_type(ref)}: {_short(ref)})"
        return
    if isinstance(ref, dict):
        for key in ref.keys() - ours.keys():
            yield f"{path}.{key}: missing (llama-server: {_short(ref[key])})"
        for key in ours.keys() - ref.keys():
            yield f"{path}.{key}: extra ({_short(ours[key])})"
        for key in ref.keys() & ours.keys():
            keep = values and key not in VOLATILE and key not in NAMES
            yield from diff_json(ref[key], ours[key], f"{path}.{key}", keep, tolerance)
    elif isinstance(ref, list):
        if len(ref) != len(ours):
            yield f"{path}: {len(ours)} elements (llama-server: {len(ref)})"
        for i, (r, o) in enumerate(zip(ref, ours, strict=False)):
            yield from diff_json(r, o, f"{path}[{i}]", values, tolerance)
    elif values and ref != ours:
        if isinstance(ref, float | int) and not isinstance(ref, bool) \
                and _same_number(float(ref), float(ours), tolerance):
            return
        yield f"{path}: {_short(ours)} (llama-server: {_short(ref)})"


def _short(v: Any) -> str:
    text = json.dumps(v, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def diff_answers(ref: Answer, ours: Answer, compare_text: bool = True,
                 compare_body: bool = True, tolerance: float = 0.0) -> list[str]:
    """Every difference between two answers; `compare_text` False compares the generated text's
    presence and type only (for requests that sample, where the values cannot agree);
    `compare_body` False compares status and content type only; `tolerance` is how far apart
    (absolute) numbers of a JSON body may be (embeddings, scores: batches move them)."""
    out: list[str] = []
    if ref.status != ours.status:
        out.append(f"status {ours.status} (llama-server: {ref.status})")
    if ref.kind != ours.kind or ref.content_type != ours.content_type:
        out.append(f"content {ours.kind} {ours.content_type} "
                   f"(llama-server: {ref.kind} {ref.content_type})")
        return out
    if not compare_body:
        return out
    if ref.kind == "text":
        if ref.body != ours.body:
            out.append(f"text {_short(ours.body)} (llama-server: {_short(ref.body)})")
        return out
    if ref.kind == "sse":
        return out + list(_diff_sse(_messages_matched(ref.body, ours.body),
                                    ours.body, compare_text))
    return out + list(diff_json(_text_masked(_messages_matched(ref.body, ours.body), compare_text),
                                _text_masked(ours.body, compare_text), tolerance=tolerance))


_NAMED = re.compile(r"""['"`]([A-Za-z_][A-Za-z0-9_./]*)['"`]""")


def message_agrees(reference: str, ours: str) -> bool:
    """Error messages are compared by pattern, not word for word: ours must name every field
    or value that llama-server's names in quotes (its `Field 'top_k': ...`, `"prompt" must
    ...`). A message that names nothing agrees with any message."""
    return all(name in ours for name in _NAMED.findall(reference))


def _messages_matched(ref: Any, ours: Any) -> Any:
    """`ref` with each error message replaced by ours where the two agree (message_agrees),
    so that only disagreeing messages show as differences."""
    if isinstance(ref, list) and isinstance(ours, list):
        return [_messages_matched(r, o) for r, o in zip(ref, ours, strict=False)] + \
            ref[len(ours):]
    if not (isinstance(ref, dict) and isinstance(ours, dict)):
        return ref
    err, our_err = ref.get("error"), ours.get("error")
    if isinstance(err, dict) and isinstance(our_err, dict) \
            and isinstance(err.get("message"), str) and isinstance(our_err.get("message"), str) \
            and message_agrees(err["message"], our_err["message"]):
        return {**ref, "error": {**err, "message": our_err["message"]}}
    return ref


def _diff_sse(ref: list[Any], ours: list[Any], compare_text: bool) -> Iterator[str]:
    """Streams: the same last event ([DONE] or not), the same final object, the same set of
    keys in the events before it, and the same text when put together."""
    if (ref[-1:] == ["[DONE]"]) != (ours[-1:] == ["[DONE]"]):
        yield "stream end: " + ("[DONE]" if ours[-1:] == ["[DONE]"] else "no [DONE]") + \
            " (llama-server: " + ("[DONE]" if ref[-1:] == ["[DONE]"] else "no [DONE]") + ")"
    ref_objs = [e for e in ref if isinstance(e, dict)]
    our_objs = [e for e in ours if isinstance(e, dict)]
    if not ref_objs or not our_objs:
        if bool(ref_objs) != bool(our_objs):
            yield f"stream: {len(our_objs)} JSON events (llama-server: {len(ref_objs)})"
        return
    yield from (f"final event {d}" for d in diff_json(_text_masked(ref_objs[-1], compare_text),
                                                      _text_masked(our_objs[-1], compare_text)))
    ref_keys = {frozenset(e) for e in ref_objs[:-1]}
    our_keys = {frozenset(e) for e in our_objs[:-1]}
    if ref_keys != our_keys:
        yield f"stream event keys {sorted(map(sorted, our_keys))} " \
              f"(llama-server: {sorted(map(sorted, ref_keys))})"
    if compare_text and streamed_text(ref) != streamed_text(ours):
        yield f"streamed text {_short(streamed_text(ours))} " \
              f"(llama-server: {_short(streamed_text(ref))})"


def streamed_text(events: list[Any]) -> str:
    """The text a stream carries, native (`content`) or OpenAI (`text`, `delta.content`)."""
    parts: list[str] = []
    for e in events:
        if not isinstance(e, dict) or e.get("stop") is True:
            continue
        parts.append(str(e.get("content", "")))
        for choice in e.get("choices", []):
            parts.append(str(choice.get("text") or ""))
            parts.append(str((choice.get("delta") or {}).get("content") or ""))
    return "".join(parts)


_TEXT_KEYS = frozenset({"content", "text", "tokens", "completion_probabilities", "logprobs",
                        "stopping_word", "has_new_line", "stop_type", "finish_reason",
                        "tokens_predicted", "completion_tokens", "total_tokens"})


def _text_masked(body: Any, compare_text: bool) -> Any:
    """With compare_text False, generated values become their types (sampled text)."""
    if compare_text:
        return body
    if isinstance(body, dict):
        return {k: (_json_type(v) if k in _TEXT_KEYS else _text_masked(v, False))
                for k, v in body.items()}
    if isinstance(body, list):
        return [_text_masked(v, False) for v in body]
    return body
