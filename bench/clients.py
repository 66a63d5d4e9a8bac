"""The three ways a benchmark request reaches a server, each timing one streamed completion.

- `GrpcClient`: our service's `Completion` RPC over grpc.aio;
- `HttpClient`: llama-server's `POST /completion` with `stream: true` (server-sent events); the
  same client talks to our REST bridge, which serves the same JSON.

Every request is a list of token ids (no tokenizer differences), greedy, with a fixed seed. The
first token is the first message that carries generated token ids; our service sends an empty
message as soon as it accepts a request, which must not count.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
import httpx
from google.protobuf import json_format
from llama.v1 import completion_pb2, service_pb2_grpc

SEED = 1234
_STALE_CONNECTION = "connection closed before any response: "


@dataclass(frozen=True)
class GenRequest:
    """One completion: prompt token ids, tokens to generate, whether the prompt may be cached."""

    prompt: tuple[int, ...]
    n_predict: int
    cache_prompt: bool = True

    def body(self) -> dict[str, Any]:
        """llama-server's JSON body for this request."""
        return {
            "prompt": list(self.prompt),
            "n_predict": self.n_predict,
            "ignore_eos": True,
            "temperature": 0.0,
            "seed": SEED,
            "cache_prompt": self.cache_prompt,
            "stream": True,
        }


@dataclass(frozen=True)
class StreamResult:
    """Client-side clock readings (time.monotonic, comparable across processes) and counts."""

    t_send: float
    t_first: float  # first generated token; t_done when none came
    t_done: float
    n_generated: int
    n_prompt: int
    n_cached: int  # prompt tokens reused from the KV cache, timings.cache_n (-1: not reported)
    error: str = ""

    @property
    def ttft(self) -> float:
        return self.t_first - self.t_send

    @property
    def decode_rate(self) -> float:
        """Tokens per second after the first one (the decode phase only)."""
        span = self.t_done - self.t_first
        return (self.n_generated - 1) / span if self.n_generated > 1 and span > 0 else 0.0


class Client(Protocol):
    async def complete(self, req: GenRequest) -> StreamResult: ...

    async def close(self) -> None: ...


class _Tally:
    """Accumulates one stream's clock readings as its messages arrive."""

    def __init__(self) -> None:
        self.t_send = time.monotonic()
        self.t_first = 0.0
        self.n_generated = 0
        self.n_prompt = 0
        self.n_cached = -1
        self.error = ""

    def tokens(self, n: int) -> None:
        if n and not self.t_first:
            self.t_first = time.monotonic()
        self.n_generated += n

    def result(self) -> StreamResult:
        t_done = time.monotonic()
        return StreamResult(self.t_send, self.t_first or t_done, t_done, self.n_generated,
                            self.n_prompt, self.n_cached, self.error)


class GrpcClient:
    """Our service over gRPC: one channel (HTTP/2, multiplexed) per client."""

    def __init__(self, address: str) -> None:
        self._channel = grpc.aio.insecure_channel(
            address, options=[("grpc.max_receive_message_length", 64 << 20)])
        self._stub = service_pb2_grpc.LlamaServerStub(self._channel)

    async def complete(self, req: GenRequest) -> StreamResult:
        # Built before the clock starts: request encoding is the client's cost, not the server's.
        message = json_format.ParseDict(req.body(), completion_pb2.CompletionRequest())
        tally = _Tally()
        try:
            async for msg in self._stub.Completion(message):
                tally.tokens(len(msg.tokens))
                if msg.stop:
                    tally.n_prompt = msg.tokens_evaluated
                    tally.n_cached = msg.timings.cache_n
                    if msg.HasField("error"):
                        tally.error = msg.error.message
        except grpc.aio.AioRpcError as e:
            tally.error = f"{e.code().name}: {e.details()}"
        return tally.result()

    async def close(self) -> None:
        await self._channel.close()


class HttpClient:
    """llama-server's HTTP API (or our REST bridge): POST /completion, server-sent events."""

    def __init__(self, base_url: str) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url, timeout=httpx.Timeout(600.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=256))

    async def complete(self, req: GenRequest) -> StreamResult:
        body = json.dumps(req.body())
        result = await self._attempt(body)
        if result.error.startswith(_STALE_CONNECTION):
            # The server closed a kept-alive connection just as it was reused (llama-server's
            # HTTP library closes one after a few requests): nothing was processed, so send
            # again, on a fresh connection, with a fresh clock.
            result = await self._attempt(body)
        return result

    async def _attempt(self, body: str) -> StreamResult:
        tally = _Tally()
        try:
            async with self._http.stream(
                    "POST", "/completion", content=body,
                    headers={"Content-Type": "application/json"}) as resp:
                if resp.status_code != 200:
                    text = (await resp.aread()).decode(errors="replace")
                    tally.error = f"HTTP {resp.status_code}: {text[:200]}"
                    return tally.result()
                # Split on b"\n" only: aiter_lines() also splits on U+2028, U+0085 and the like,
                # which generated text may hold unescaped inside a JSON string.
                pending = b""
                async for chunk in resp.aiter_bytes():
                    *lines, pending = (pending + chunk).split(b"\n")
                    for line in lines:
                        if line.startswith(b"data: "):
                            self._absorb(tally, json.loads(line[6:]))
        except httpx.RemoteProtocolError as e:
            tally.error = f"{_STALE_CONNECTION if not tally.n_generated else ''}{e}"
        except (httpx.HTTPError, ValueError) as e:  # ValueError: an event that is not JSON
            tally.error = f"{type(e).__name__}: {e}"
        return tally.result()

    @staticmethod
    def _absorb(tally: _Tally, event: Any) -> None:
        if not isinstance(event, dict):
            return
        if "error" in event:
            tally.error = str(event["error"])
            return
        tally.tokens(len(event.get("tokens") or ()))
        if event.get("stop"):
            # The final count is the server's: the pinned llama-server's streamed `tokens` lists
            # can miss one (seen: 7 of 8 tokens in a stream whose tokens_predicted said 8).
            tally.n_generated = int(event.get("tokens_predicted", tally.n_generated))
            tally.n_prompt = int(event.get("tokens_evaluated", 0))
            # timings.cache_n: llama-server's tokens_cached counts every token in the slot.
            tally.n_cached = int((event.get("timings") or {}).get("cache_n", -1))

    async def close(self) -> None:
        await self._http.aclose()


@dataclass(frozen=True)
class Endpoint:
    """How to reach one benchmarked path: `kind` is "grpc" or "http"; picklable for workers."""

    kind: str
    address: str  # host:port for gRPC, a base URL for HTTP

    def client(self) -> Client:
        return GrpcClient(self.address) if self.kind == "grpc" else HttpClient(self.address)
