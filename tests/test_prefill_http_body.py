"""The Envoy door's half (llama.v1.LlamaServerHttp, HTTP bodies over gRPC, as Envoy's
transcoder calls it): the continued assistant message starts the answer, whole and streamed,
and `usage` for n choices counts each prompt once, as the REST bridge answers them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.api.httpbody_pb2 import HttpBody
from llama.v1 import http_pb2_grpc

from service.config import load_config
from service.server import start_server

pytestmark = pytest.mark.slow

USER = {"role": "user", "content": "Hello there"}
PREFILLED = [USER, {"role": "assistant", "content": "Once upon"}]
GREEDY = {"max_tokens": 3, "temperature": 0.0}


async def _post(stub: http_pb2_grpc.LlamaServerHttpStub, rpc: str,
                body: dict[str, Any]) -> list[Any]:
    """The JSON body of the answer, or the JSON events of a stream (without [DONE])."""
    request = HttpBody(content_type="application/json", data=json.dumps(body).encode())
    text = b"".join([part.data async for part in getattr(stub, rpc)(request, timeout=60)])
    if not body.get("stream"):
        return [json.loads(text)]
    events = [e.removeprefix("data: ") for e in text.decode().split("\n\n") if e]
    return [json.loads(e) for e in events if e != "[DONE]"]


def test_prefill_and_usage_through_http_bodies(tiny_bpe_path: Path) -> None:
    config = load_config(["-m", str(tiny_bpe_path), "-c", "1024", "-np", "2", "--no-warmup"],
                         env={})

    async def scenario() -> list[list[Any]]:
        handle = await start_server(config, host="127.0.0.1", port=0)
        try:
            await asyncio.wait_for(handle.loaded.wait(), 60)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as ch:
                stub = http_pb2_grpc.LlamaServerHttpStub(ch)
                chat = [{**GREEDY, "messages": PREFILLED},
                        {**GREEDY, "messages": PREFILLED, "stream": True},
                        {**GREEDY, "messages": [USER]},
                        {**GREEDY, "messages": [USER], "n": 2}]
                out = [await _post(stub, "ChatCompletion", b) for b in chat]
                for prompt in (["Hi"], ["The capital"], ["Hi", "The capital"]):
                    out.append(await _post(stub, "OpenAICompletion",
                                           {**GREEDY, "prompt": prompt, "n": 2,
                                            "ignore_eos": True}))
                return out
        finally:
            await handle.stop(0)

    whole, stream, one, two, hi, capital, both = asyncio.run(scenario())
    answer = whole[0]["choices"][0]["message"]["content"]
    assert answer.startswith("Once upon") and len(answer) > len("Once upon")
    deltas = [c["delta"].get("content") or "" for e in stream for c in e["choices"]]
    assert "".join(deltas) == answer and next(d for d in deltas if d).startswith("Once upon")
    assert two[0]["usage"]["prompt_tokens"] == one[0]["usage"]["prompt_tokens"]
    assert two[0]["usage"]["completion_tokens"] == 2 * one[0]["usage"]["completion_tokens"]
    # each prompt once, every choice's tokens (n: 2 of each prompt)
    for key in ("prompt_tokens", "completion_tokens"):
        assert both[0]["usage"][key] == hi[0]["usage"][key] + capital[0]["usage"][key], key
    assert hi[0]["usage"]["completion_tokens"] == 2 * 3  # both choices of one prompt
