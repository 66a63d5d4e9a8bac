"""Pure logic of the bridge, no server: response_fields, usage sums, chat deltas put back
together, SSE framing, API-key extraction, where the CLI's bridge finds the service, and the
gRPC error table."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from llama.v1 import chat_pb2, common_pb2, completion_pb2
from rest_harness import free_port
from starlette.datastructures import Headers
from starlette.types import Message

from rest_bridge.app import create_app
from rest_bridge.auth import grpc_metadata, presented_key
from rest_bridge.errors import BridgeError
from rest_bridge.jsonio import Json, dumps, schemas_as_text
from rest_bridge.launcher import grpc_target_for
from rest_bridge.render_native import pick_fields
from rest_bridge.render_openai import ChatRenderer, TextCompletionRenderer
from rest_bridge.shapes import sum_usage
from rest_bridge.sse import KEEP_ALIVE, SSEResponse, frame, frames


def test_pick_fields_unnests_paths_under_their_own_names() -> None:
    obj = {"content": "x", "generation_settings": {"n_predict": 5, "seed": 1}, "stop": True}
    assert pick_fields(obj, ["content", "generation_settings/n_predict", "missing/deep"]) == \
        {"content": "x", "generation_settings/n_predict": 5}
    assert pick_fields(obj, [""]) == {}  # editor plugins' warm-up request asks for nothing
    assert pick_fields(obj, []) is obj


def test_sum_usage() -> None:
    u = {"completion_tokens": 2, "prompt_tokens": 3, "total_tokens": 5,
         "prompt_tokens_details": {"cached_tokens": 1}}
    assert sum_usage([u, u]) == {"completion_tokens": 4, "prompt_tokens": 6, "total_tokens": 10,
                                 "prompt_tokens_details": {"cached_tokens": 2}}


def test_sum_usage_counts_each_prompt_once() -> None:
    """OpenAI's usage for n choices: the prompt once, every choice's completion tokens."""
    def u(prompt: int, completion: int, cached: int) -> dict[str, Json]:
        return {"completion_tokens": completion, "prompt_tokens": prompt,
                "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": cached}}

    # two prompts (3 and 5 tokens), two choices each; a prompt's first usage counts for it
    usages = [u(3, 4, 1), u(3, 2, 3), u(5, 1, 0), u(5, 4, 5)]
    assert sum_usage(usages, [0, 0, 1, 1]) == {
        "completion_tokens": 11, "prompt_tokens": 8, "total_tokens": 19,
        "prompt_tokens_details": {"cached_tokens": 1}}


def _final(index: int, prompt: int, completion: int) -> completion_pb2.OpenAICompletionChunk:
    m = completion_pb2.OpenAICompletionChunk(id="cmpl-1", object="text_completion", model="m")
    m.choices.add(index=index, text="ab"[index % 2], finish_reason="length")
    m.usage.CopyFrom(common_pb2.Usage(completion_tokens=completion, prompt_tokens=prompt,
                                      total_tokens=prompt + completion))
    return m


@pytest.mark.parametrize("n", [1, 2])
def test_choices_share_their_prompt_in_the_usage(n: int) -> None:
    """/v1/completions: choice i completed prompt i // n; /v1/chat/completions: one prompt."""
    req = completion_pb2.CompletionRequest(n=n)
    msgs = [_final(i, 3 if i // n == 0 else 5, 4) for i in range(2 * n)]
    usage = TextCompletionRenderer(req).result(msgs)["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (8, 8 * n)
    chat = [_chunk(index=i, finish_reason="length") for i in range(n + 1)]
    for m in chat:
        m.usage.CopyFrom(common_pb2.Usage(completion_tokens=4, prompt_tokens=37,
                                          total_tokens=41))
    usage = ChatRenderer(chat_pb2.ChatCompletionRequest(n=n + 1)).result(chat)["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (37, 4 * (n + 1))


def _chunk(**choice: object) -> chat_pb2.ChatCompletionChunk:
    m = chat_pb2.ChatCompletionChunk(id="chatcmpl-1", object="chat.completion.chunk",
                                     created=1, model="m")
    m.choices.add(**choice)
    return m


def test_chat_deltas_make_one_message_with_tool_calls() -> None:
    call = chat_pb2.ToolCall(index=0, id="call_1", type="function",
                             function=chat_pb2.FunctionCall(name="get", arguments='{"a"'))
    more = chat_pb2.ToolCall(index=0, function=chat_pb2.FunctionCall(arguments=": 1}"))
    msgs = [
        _chunk(index=0, delta=chat_pb2.ChatResponseMessage(role="assistant")),
        _chunk(index=0, delta=chat_pb2.ChatResponseMessage(reasoning_content="hmm")),
        _chunk(index=0, delta=chat_pb2.ChatResponseMessage(tool_calls=[call])),
        _chunk(index=0, delta=chat_pb2.ChatResponseMessage(tool_calls=[more])),
        _chunk(index=0, finish_reason="tool_calls"),
    ]
    msgs[-1].usage.CopyFrom(common_pb2.Usage(completion_tokens=4, prompt_tokens=2,
                                             total_tokens=6))
    out = ChatRenderer(chat_pb2.ChatCompletionRequest()).result(msgs)
    assert out["object"] == "chat.completion"
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"] == {
        "role": "assistant", "content": None, "reasoning_content": "hmm",
        "tool_calls": [{"type": "function", "id": "call_1",
                        "function": {"name": "get", "arguments": '{"a": 1}'}}]}
    assert out["usage"]["total_tokens"] == 6


def test_chat_stream_events_end_with_finish_and_usage() -> None:
    req = chat_pb2.ChatCompletionRequest(stream_options=common_pb2.StreamOptions(
        include_usage=True))
    last = _chunk(index=0, delta=chat_pb2.ChatResponseMessage(content="!"),
                  finish_reason="stop")
    last.usage.completion_tokens = 1
    events = ChatRenderer(req).events(last)
    assert [e["choices"] for e in events] == [
        [{"finish_reason": None, "index": 0, "delta": {"content": "!"}}],
        [{"finish_reason": "stop", "index": 0, "delta": {}}],
        []]
    assert events[-1]["usage"]["completion_tokens"] == 1


def test_sse_framing() -> None:
    assert frame({"a": "é", "b": [1, 2]}) == 'data: {"a":"é","b":[1,2]}\n\n'.encode()
    assert frames([{"x": 1}, {"y": 2}]) == b'data: {"x":1}\n\ndata: {"y":2}\n\n'
    assert dumps({"v": float("nan"), "w": [float("-inf")]}) == b'{"v":null,"w":[null]}'


def test_presented_key() -> None:
    assert presented_key(Headers({"authorization": "Bearer k1"})) == "k1"
    assert presented_key(Headers({"authorization": "bearer k1"})) == "k1"
    assert presented_key(Headers({"authorization": "k2"})) == "k2"
    assert presented_key(Headers({"x-api-key": "k3"})) == "k3"
    assert presented_key(Headers({})) is None
    assert grpc_metadata(Headers({"x-api-key": "k3"})) == (("authorization", "Bearer k3"),)
    assert grpc_metadata(Headers({})) == ()


def test_grpc_target_for() -> None:
    assert grpc_target_for("127.0.0.1", 5, tls=False) == "127.0.0.1:5"
    assert grpc_target_for("0.0.0.0", 5, tls=False) == "127.0.0.1:5"
    assert grpc_target_for("::", 5, tls=False) == "[::1]:5"
    assert grpc_target_for("fe80::1", 5, tls=False) == "[fe80::1]:5"
    assert grpc_target_for("/tmp/x.sock", 5, tls=False) == "127.0.0.1:5"
    assert grpc_target_for("127.0.0.1", 5, tls=True) == "localhost:5"
    assert grpc_target_for("api.example.com", 5, tls=True) == "api.example.com:5"


def test_error_table() -> None:
    # grpc ships no type stubs (pyproject ignores its imports), so the base class is Any.
    class Failed(grpc.aio.AioRpcError):  # type: ignore[misc]
        def __init__(self, code: grpc.StatusCode) -> None:
            super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="d")

    cases = {grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error"),
             grpc.StatusCode.UNAUTHENTICATED: (401, "authentication_error"),
             grpc.StatusCode.NOT_FOUND: (404, "not_found_error"),
             grpc.StatusCode.UNIMPLEMENTED: (501, "not_supported_error"),
             grpc.StatusCode.UNAVAILABLE: (503, "unavailable_error"),
             grpc.StatusCode.INTERNAL: (500, "server_error"),
             grpc.StatusCode.UNKNOWN: (500, "server_error")}
    for code, (status, type_) in cases.items():
        err = BridgeError.from_rpc(Failed(code))
        assert (err.status, err.type) == (status, type_)
        assert err.body() == {"error": {"code": status, "message": "d", "type": type_}}


async def _run_sse(events: AsyncIterator[bytes], ping_interval: float,
                   disconnect_after: float | None) -> list[bytes]:
    sent: list[bytes] = []

    async def receive() -> dict[str, Any]:
        if disconnect_after is None:
            await asyncio.Event().wait()
        await asyncio.sleep(disconnect_after or 0)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            sent.append(message["body"])

    await SSEResponse(events, ping_interval)({"type": "http"}, receive, send)
    return sent


def test_sse_keep_alive_while_silent() -> None:
    async def slow() -> AsyncIterator[bytes]:
        yield frame({"a": 1})
        await asyncio.sleep(0.35)
        yield frame({"b": 2})

    sent = asyncio.run(_run_sse(slow(), ping_interval=0.1, disconnect_after=None))
    assert sent[0] == b'data: {"a":1}\n\n' and sent[-2:] == [b'data: {"b":2}\n\n', b""]
    assert 2 <= sent.count(KEEP_ALIVE) <= 4
    assert set(sent[1:-2]) == {KEEP_ALIVE}


def test_sse_headers_go_out_before_the_first_event() -> None:
    # The client sets up its response while the service still works on the first token.
    order: list[str] = []

    async def first_token_later() -> AsyncIterator[bytes]:
        await asyncio.sleep(0.05)
        order.append("event ready")
        yield frame({"content": "x"})

    async def run() -> None:
        async def receive() -> dict[str, Any]:
            await asyncio.Event().wait()
            return {}

        async def send(message: Message) -> None:
            order.append(message["type"])

        await SSEResponse(first_token_later())({"type": "http"}, receive, send)

    asyncio.run(run())
    assert order == ["http.response.start", "event ready", "http.response.body",
                     "http.response.body"]


def test_sse_disconnect_closes_the_source() -> None:
    closed = []

    async def endless() -> AsyncIterator[bytes]:
        try:
            while True:
                yield frame({"t": 1})
                await asyncio.sleep(0.01)
        finally:
            closed.append(True)  # where the bridge cancels its gRPC call

    sent = asyncio.run(_run_sse(endless(), ping_interval=0, disconnect_after=0.1))
    assert closed == [True]
    assert 1 < len(sent) < 50 and b"" not in sent  # stopped, without a normal end


def test_api_prefix_and_keys_without_a_service() -> None:
    # No service behind it: the routes, the prefix and the key check still answer.
    app = create_app(f"127.0.0.1:{free_port()}", ["k1"], api_prefix="/llama/")

    async def go() -> list[tuple[int, str]]:
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://bridge") as c:
            key = {"x-api-key": "k1"}
            responses = [await c.get("/health"), await c.get("/health", headers=key),
                         await c.get("/llama/health"),
                         await c.get("/llama/v1/models"),
                         await c.get("/llama/v1/models", headers=key),
                         await c.post("/llama/completion", content=b"{",
                                      headers={"authorization": "Bearer k1"})]
            return [(r.status_code, r.json()["error"]["type"]) for r in responses]

    # Outside the prefix nothing is public, as in llama-server (the key check comes first).
    assert asyncio.run(go()) == [(401, "authentication_error"), (404, "not_found_error"),
                                 (503, "unavailable_error"),
                                 (401, "authentication_error"), (503, "unavailable_error"),
                                 (400, "invalid_request_error")]


def test_schemas_go_to_the_service_as_text_in_their_key_order() -> None:
    body = {"json_schema": {"b": 1, "a": 2},
            "response_format": {"type": "json_schema", "schema": {"d": 1, "c": 2},
                                "json_schema": {"name": "n", "schema": {"f": 1, "e": 2}}},
            "tools": [{"type": "function", "function": {"name": "t", "parameters": {"h": 1,
                                                                                   "g": 2}}},
                      "not a tool"]}
    out = schemas_as_text(body)
    assert out["json_schema_json"] == '{"b": 1, "a": 2}' and "json_schema" not in out
    assert out["response_format"]["schema_json"] == '{"d": 1, "c": 2}'
    assert out["response_format"]["json_schema"]["schema_json"] == '{"f": 1, "e": 2}'
    assert out["tools"][0]["function"]["parameters_json"] == '{"h": 1, "g": 2}'
    assert out["tools"][1] == "not a tool" and body["json_schema"] == {"b": 1, "a": 2}
    # A text form already given wins; a value that is not an object is left to the parser.
    kept = {"json_schema": {"x": 1}, "json_schema_json": "{}"}
    assert schemas_as_text(kept) == kept and schemas_as_text({"json_schema": 5}) == \
        {"json_schema": 5}


def test_sse_disconnect_ends_the_call_not_the_reading_task() -> None:
    # grpc.aio leaks a read's native batch when the task awaiting it is cancelled
    # (grpc/grpc#43360): on a disconnect SSEResponse cancels the call, and the source's
    # pending read then ends by itself.
    outcome: list[str] = []

    async def run() -> None:
        call_cancelled = asyncio.Event()

        async def source() -> AsyncIterator[bytes]:
            yield frame({"t": 1})
            try:
                await call_cancelled.wait()  # a read that ends when the call is cancelled
            except asyncio.CancelledError:
                outcome.append("reading task cancelled")
                raise
            outcome.append("read ended by the call's cancel")

        async def receive() -> dict[str, Any]:
            await asyncio.sleep(0.05)
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            pass

        await SSEResponse(source(), on_disconnect=call_cancelled.set)(
            {"type": "http"}, receive, send)

    asyncio.run(run())
    assert outcome == ["read ended by the call's cancel"]


@settings(max_examples=300, deadline=None)
@given(text=st.text(), index=st.integers(0, 7), model=st.text(max_size=20))
def test_a_text_only_chat_chunk_is_the_general_paths_json(text: str, index: int,
                                                          model: str) -> None:
    # ChatRenderer writes text-only chunks from a cached envelope (the common case of a
    # stream); the bytes must be what the general path's event would dump to.
    m = chat_pb2.ChatCompletionChunk(id="chatcmpl-x\"1", created=1765000000, model=model,
                                     system_fingerprint="b1-\u00e9")
    c = m.choices.add(index=index)
    c.delta.content = text
    renderer = ChatRenderer(chat_pb2.ChatCompletionRequest(stream=True))
    expected = dumps({"id": m.id, "object": "chat.completion.chunk", "created": m.created,
                      "model": m.model, "system_fingerprint": m.system_fingerprint,
                      "choices": [{"finish_reason": None, "index": index,
                                   "delta": {"content": text}}]})
    for _ in range(2):  # the second time from the cached envelope
        assert frames(renderer.events(m)) == b"data: " + expected + b"\n\n"


def test_a_chunk_with_more_than_text_takes_the_general_path() -> None:
    m = chat_pb2.ChatCompletionChunk(id="chatcmpl-1", created=1, model="m")
    c = m.choices.add(index=0)
    c.delta.role = "assistant"
    c.delta.content = ""
    events = ChatRenderer(chat_pb2.ChatCompletionRequest(stream=True)).events(m)
    assert events == [{"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                       "model": "m", "system_fingerprint": "",
                       "choices": [{"finish_reason": None, "index": 0,
                                    "delta": {"role": "assistant", "content": ""}}]}]
