"""llama-server's assistant prefill: a trailing assistant message is continued, not closed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format
from llama.v1 import chat_pb2, service_pb2_grpc

from service.config import load_config
from service.server import start_server


def _request(*turns: tuple[str, str]) -> chat_pb2.ChatCompletionRequest:
    req = chat_pb2.ChatCompletionRequest()
    for role, text in turns:
        req.messages.add(role=role).content.string_value = text
    return req


@pytest.mark.slow
@pytest.mark.parametrize("prefill", [True, False])
def test_trailing_assistant_message(tiny_bpe_path: Path, prefill: bool) -> None:
    flags = [] if prefill else ["--no-prefill-assistant"]
    config = load_config(["-m", str(tiny_bpe_path), "-c", "512", "-np", "1", "--no-warmup",
                          *flags], env={})

    async def scenario() -> tuple[str, str, str, str]:
        handle = await start_server(config, host="127.0.0.1", port=0)
        try:
            await asyncio.wait_for(handle.loaded.wait(), 60)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as ch:
                stub = service_pb2_grpc.LlamaServerStub(ch)
                turns = (("user", "Hi"), ("assistant", "Hello, I am"))
                open_turn = await stub.ApplyTemplate(_request(*turns), timeout=10)
                plain = await stub.ApplyTemplate(_request(("user", "Hi")), timeout=10)
                answer, first = await _answer(stub, _request(*turns))
                return open_turn.prompt, plain.prompt, answer, first
        finally:
            await handle.stop(0)

    continued, plain, answer, first = asyncio.run(scenario())
    if prefill:
        assert continued.endswith("Hello, I am")
        assert continued.startswith(plain)  # the generation prompt, then the prefilled text
        # the answer starts with the prefilled text, as llama-server's; a stream's first delta
        assert answer.startswith("Hello, I am") and len(answer) > len("Hello, I am")
        assert first.startswith("Hello, I am")
    else:
        assert not continued.endswith("Hello, I am")
        assert "Hello, I am<|eot_id|>" in continued
        assert not answer.startswith("Hello, I am") and not first.startswith("Hello, I am")


async def _answer(stub: service_pb2_grpc.LlamaServerStub,
                  req: chat_pb2.ChatCompletionRequest) -> tuple[str, str]:
    """The whole answer's content (3 greedy tokens), and a stream's first content delta."""
    req.max_tokens, req.temperature = 3, 0.0
    msgs = [m async for m in stub.ChatCompletion(req, timeout=60)]
    whole = next(c.message.content for m in msgs for c in m.choices if c.HasField("message"))
    req.stream = True
    async for m in stub.ChatCompletion(req, timeout=60):
        for c in m.choices:
            if c.delta.content:
                return whole, c.delta.content
    return whole, ""


@pytest.mark.slow
def test_continue_final_message(tiny_bpe_path: Path) -> None:
    """llama-server's continue_final_message: the last message continued even without the
    prefill flag; with add_generation_prompt left true, or asking to continue the thinking, a
    clear INVALID_ARGUMENT."""
    config = load_config(["-m", str(tiny_bpe_path), "-c", "512", "-np", "1", "--no-warmup",
                          "--no-prefill-assistant"], env={})

    def request(value: object, add_gen: bool | None) -> chat_pb2.ChatCompletionRequest:
        req = _request(("user", "Hi"), ("assistant", "Hello, I am"))
        json_format.ParseDict({"continue_final_message": value}, req)
        if add_gen is not None:
            req.add_generation_prompt = add_gen
        return req

    async def scenario() -> tuple[list[str], list[tuple[grpc.StatusCode, str]]]:
        handle = await start_server(config, host="127.0.0.1", port=0)
        try:
            await asyncio.wait_for(handle.loaded.wait(), 60)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as ch:
                stub = service_pb2_grpc.LlamaServerStub(ch)
                ok = [(await stub.ApplyTemplate(request(v, False), timeout=10)).prompt
                      for v in (True, "content", False)]
                errors = []
                for v, add_gen in ((True, None), ("reasoning_content", False)):
                    try:
                        await stub.ApplyTemplate(request(v, add_gen), timeout=10)
                    except grpc.aio.AioRpcError as e:
                        errors.append((e.code(), e.details() or ""))
                return ok, errors
        finally:
            await handle.stop(0)

    (as_true, as_content, off), errors = asyncio.run(scenario())
    assert as_true == as_content and as_true.endswith("Hello, I am")
    assert "Hello, I am<|eot_id|>" in off  # false: no continuation, the turn is closed
    assert [code for code, _ in errors] == [grpc.StatusCode.INVALID_ARGUMENT] * 2
    assert "Cannot set both add_generation_prompt" in errors[0][1]
    assert "reasoning_content" in errors[1][1]
