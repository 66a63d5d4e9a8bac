"""llama.v1.LlamaServerHttp: llama-server's REST routes as HTTP bodies in and out, for Envoy's
grpc_json_transcoder (protos/llama/v1/http.proto, docs/envoy.md).

Each RPC does what the REST bridge's route does, with the bridge's own pure code: the body is
parsed by rest_bridge.jsonio into the typed request, the typed RPC of llama.v1.LlamaServer runs
in-process (the same servicer object, no second gRPC hop), and its messages are rendered by
rest_bridge.render_* and framed by rest_bridge.sse_frames. Errors are BridgeError's JSON. So the
bridge and Envoy answer the same bytes; tests/test_two_front_doors.py compares them.

The HTTP status travels as the response metadata `x-http-status` (Envoy's Lua filter makes it
the `:status` and drops it), other headers (`x-request-id`, `cache-control`) as metadata too.
The gRPC status is OK even for an HTTP error: the error is the body.

Not a mixin of LlamaServicer: the HTTP service's RPCs have the typed service's names
(Completion, ...), so it is its own servicer object wrapping the typed one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import grpc
from google.api.httpbody_pb2 import HttpBody
from llama.v1 import (
    chat_pb2,
    completion_pb2,
    embedding_pb2,
    http_pb2,
    http_pb2_grpc,
    server_info_pb2,
    server_pb2,
    tokenize_pb2,
)

from api_common.auth import key_matches
from rest_bridge.errors import BridgeError
from rest_bridge.input_checks import check_input_extra
from rest_bridge.jsonio import (
    Json,
    dumps,
    message_json,
    parse_json,
    parse_object,
    to_message,
)
from rest_bridge.render_embedding import (
    native_json,
    openai_embed_json,
    rerank_json,
    wants_native,
)
from rest_bridge.render_native import NativeRenderer
from rest_bridge.render_openai import ChatRenderer, TextCompletionRenderer
from rest_bridge.render_server import control_json, models_json, props_json, slots_json
from rest_bridge.sse_frames import DONE, KEEP_ALIVE, frame, frames
from service.rpc_base import Context

JSON = "application/json; charset=utf-8"
SSE = "text/event-stream; charset=utf-8"  # as Starlette writes the bridge's
STATUS_KEY = "x-http-status"
REQUEST_ID_KEY = "x-request-id"
# The bridge's 401 for a missing or wrong key (rest_bridge.auth.UNAUTHORIZED).
UNAUTHORIZED = (401, "Invalid API Key", "authentication_error")
Renderer = Any  # rest_bridge.generation.Renderer (that module imports Starlette)


class _Aborted(grpc.aio.AioRpcError):  # type: ignore[misc]
    """A typed RPC's abort inside an HTTP-body call: the status it would have sent."""


class InnerContext:
    """The context a typed RPC runs with inside an HTTP-body call: the caller's metadata and
    cancellation, but its initial metadata is kept (for the HTTP headers) and its abort raises
    the status, which BridgeError.from_rpc reads exactly as the bridge reads it off the wire."""

    def __init__(self, outer: Context) -> None:
        self._outer = outer
        self.initial: dict[str, str] = {}

    async def send_initial_metadata(self, metadata: Sequence[tuple[str, Any]]) -> None:
        self.initial.update((k, str(v)) for k, v in metadata)

    async def abort(self, code: grpc.StatusCode, details: str = "",
                    trailing_metadata: Sequence[tuple[str, Any]] = ()) -> None:
        raise _Aborted(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing_metadata),
                       details)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._outer, name)


def presented_key(metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    """The API key, read as the bridge reads it from the headers (rest_bridge.auth): the
    `authorization` value with or without `Bearer `, else `x-api-key`."""
    found = {k.lower(): v for k, v in metadata or () if isinstance(v, str)}
    value = found.get("authorization") or found.get("x-api-key")
    if not value:
        return None
    if value[:7].lower() == "bearer ":
        value = value[7:]
    return value.strip() or None


def _body(request: Any) -> bytes:
    if not isinstance(request, HttpBody):  # service.decode_guard's stand-in for bad bytes
        raise BridgeError.invalid_request("the request could not be decoded")
    return bytes(request.data)


async def _head(context: Context, status: int, headers: dict[str, str]) -> None:
    await context.send_initial_metadata(((STATUS_KEY, str(status)), *headers.items()))


def _error_body(err: BridgeError) -> HttpBody:
    return HttpBody(content_type=JSON, data=dumps(err.body()))


# Set on a 503 (loading, draining, queue full) answered before anything else: Envoy retries the
# request on another replica (retry_on retriable-headers, envoy/llama-envoy.yaml.in) as it does
# for the typed RPCs' UNAVAILABLE, and its Lua filter drops the header.
RETRY_ELSEWHERE_KEY = "x-retry-elsewhere"


async def _error(context: Context, err: BridgeError) -> HttpBody:
    headers = {k.lower(): v for k, v in err.headers.items()}
    if err.status == 503:
        headers[RETRY_ELSEWHERE_KEY] = "1"
    await _head(context, err.status, headers)
    return _error_body(err)


def _bridge_error(e: Exception) -> BridgeError:
    if isinstance(e, BridgeError):
        return e
    if isinstance(e, grpc.aio.AioRpcError):
        return BridgeError.from_rpc(e)
    raise e


class LlamaHttpServicer(http_pb2_grpc.LlamaServerHttpServicer):  # type: ignore[misc]
    """The HTTP-body RPCs over `typed`, the llama.v1.LlamaServer servicer."""

    def __init__(self, typed: Any, api_keys: Sequence[str] = (),
                 sse_ping_interval: float = 30.0) -> None:
        self._typed = typed
        self._keys = tuple(api_keys)
        self._ping = float(sse_ping_interval)

    def _admit(self, context: Context) -> None:
        if not self._keys:
            return
        key = presented_key(context.invocation_metadata())
        if key is None or not key_matches(key, self._keys):
            raise BridgeError(*UNAUTHORIZED)

    # -- generation -------------------------------------------------------------------------
    def Completion(self, request: Any, context: Context) -> AsyncIterator[HttpBody]:
        return self._generate(request, context, completion_pb2.CompletionRequest(),
                              "Completion", NativeRenderer)

    def Infill(self, request: Any, context: Context) -> AsyncIterator[HttpBody]:
        return self._generate(request, context, completion_pb2.CompletionRequest(), "Infill",
                              NativeRenderer, check_input_extra)

    def OpenAICompletion(self, request: Any, context: Context) -> AsyncIterator[HttpBody]:
        return self._generate(request, context, completion_pb2.CompletionRequest(),
                              "OpenAICompletion", TextCompletionRenderer)

    def ChatCompletion(self, request: Any, context: Context) -> AsyncIterator[HttpBody]:
        return self._generate(request, context, chat_pb2.ChatCompletionRequest(),
                              "ChatCompletion", ChatRenderer)

    async def _generate(self, request: Any, context: Context, message: Any, rpc: str,
                        renderer_of: Callable[[Any], Renderer],
                        check: Callable[[dict[str, Json]], None] | None = None,
                        ) -> AsyncIterator[HttpBody]:
        """rest_bridge.generation.respond's answer: SSE when the request streams, else one
        JSON body; an error before the first event is an HTTP status, after it an event."""
        inner = InnerContext(context)
        call: Any = None
        events: Any = None
        try:
            try:
                self._admit(context)
                body = parse_object(_body(request))
                if check is not None:
                    check(body)
                req = to_message(body, message)
                call = getattr(self._typed, rpc)(req, inner)
                first = await _next(call)
                if first is None:
                    raise BridgeError(500, "the generation ended without a result")
                if first.HasField("error"):
                    raise BridgeError.from_info(first.error)
                headers = _id_header(inner)
                renderer = renderer_of(req)
                if not req.stream:
                    msgs = await _collect(call, first)
                    await _head(context, 200, headers)
                    yield HttpBody(content_type=JSON, data=dumps(renderer.result(msgs)))
                    return
            except (BridgeError, grpc.aio.AioRpcError) as e:
                await _close(call)
                yield await _error(context, _bridge_error(e))
                return
            # The headers go out now, before the first token, as the bridge's SSEResponse
            # sends them (the transcoder sends them with the first message's content type).
            await _head(context, 200, {"cache-control": "no-cache", **headers})
            yield HttpBody(content_type=SSE)
            events = self._sse(call, first, renderer, _ping_interval(req, self._ping))
            async for chunk in events:
                yield HttpBody(data=chunk)
        finally:
            # However this ends (the client gone: the call cancelled or this generator closed),
            # the SSE loop stops waiting first, then the typed RPC's generator is closed, which
            # cancels the generation and frees its slot.
            await _close(events)
            await _close(call)

    async def _sse(self, call: Any, first: Any, renderer: Renderer,
                   ping: float) -> AsyncIterator[bytes]:
        """rest_bridge.generation._sse: the events, an error as the last one, [DONE] where
        llama-server sends it, and `:` keep-alives after `ping` seconds of silence."""
        msg = first
        nxt: asyncio.Future[Any] | None = None
        try:
            while msg is not None:
                if msg.HasField("error"):
                    yield frame(BridgeError.from_info(msg.error).body())
                    return
                events = renderer.events(msg)
                if events:
                    yield frames(events)
                try:
                    if ping > 0:
                        # A task of its own, so that waiting on it can time out for a
                        # keep-alive without cancelling the typed RPC's generator.
                        nxt = asyncio.ensure_future(_next(call))
                        while not (await asyncio.wait({nxt}, timeout=ping))[0]:
                            yield KEEP_ALIVE
                        msg, nxt = nxt.result(), None
                    else:
                        msg = await _next(call)
                except (BridgeError, grpc.aio.AioRpcError) as e:
                    yield frame(_bridge_error(e).body())
                    return
            if renderer.done_marker:
                yield DONE
        finally:
            if nxt is not None:  # the client went away while the next message was awaited
                nxt.cancel()
                with contextlib.suppress(BaseException):
                    await nxt

    # -- unary routes -----------------------------------------------------------------------
    async def _unary(self, request: Any, context: Context, message: Any, rpc: str,
                     render: Callable[[Any, Any, Json], Json],
                     rpc_of: Callable[[Json], str] | None = None,
                     body_of: Callable[[bytes], Json] = parse_object,
                     wrap: Callable[[Json], dict[str, Json]] | None = None,
                     public: bool = False) -> HttpBody:
        """Parse the body (body_of; wrap(body) is what fills `message`), call the typed `rpc`
        (or the one rpc_of(body) names), answer render(response, request, body): JSON, or an
        HttpBody as it is; errors in llama-server's shape."""
        try:
            if not public:
                self._admit(context)
            body = body_of(_body(request))
            req = to_message(wrap(body) if wrap is not None else body, message)
            if rpc_of is not None:
                rpc = rpc_of(body)
            resp = await getattr(self._typed, rpc)(req, InnerContext(context))
            out = render(resp, req, body)
        except (BridgeError, grpc.aio.AioRpcError) as e:
            return await _error(context, _bridge_error(e))
        await _head(context, 200, {})
        if isinstance(out, HttpBody):
            return out
        return HttpBody(content_type=JSON, data=dumps(out))

    # -- server routes (the bridge's rest_bridge/routes_server.py) ----------------------------
    async def SetProps(self, request: Any, context: Context) -> HttpBody:
        return await self._unary(request, context, server_pb2.SetPropsRequest(), "SetProps",
                                 _success, wrap=lambda b: {"props": b})

    async def GetMetrics(self, request: Any, context: Context) -> HttpBody:
        return await self._unary(request, context, server_pb2.GetMetricsRequest(),
                                 "GetMetrics", lambda r, _q, _b: _text(r.prometheus),
                                 body_of=_ignored)

    async def ListLoraAdapters(self, request: Any, context: Context) -> HttpBody:
        return await self._unary(
            request, context, server_pb2.ListLoraAdaptersRequest(), "ListLoraAdapters",
            lambda r, _q, _b: [message_json(a) for a in r.adapters], body_of=_ignored)

    async def SetLoraAdapters(self, request: Any, context: Context) -> HttpBody:
        return await self._unary(request, context, server_pb2.SetLoraAdaptersRequest(),
                                 "SetLoraAdapters", _success, body_of=_adapters,
                                 wrap=lambda b: {"adapters": b})

    async def ListModels(self, request: Any, context: Context) -> HttpBody:
        return await self._unary(request, context, server_pb2.ListModelsRequest(),
                                 "ListModels", lambda r, _q, _b: models_json(r),
                                 body_of=_ignored)

    async def GetLoad(self, request: Any, context: Context) -> HttpBody:
        return await self._unary(request, context, server_pb2.GetLoadRequest(), "GetLoad",
                                 lambda r, _q, _b: message_json(r), body_of=_ignored)

    async def GetServerInfo(self, request: Any, context: Context) -> HttpBody:
        return await self._unary(request, context, server_info_pb2.GetServerInfoRequest(),
                                 "GetServerInfo", lambda r, _q, _b: message_json(r),
                                 body_of=_ignored)

    async def ControlChatCompletion(self, request: Any, context: Context) -> HttpBody:
        return await self._unary(request, context, chat_pb2.ControlChatCompletionRequest(),
                                 "ControlChatCompletion", lambda r, _q, _b: control_json(r))

    async def GetProps(self, request: Any, context: Context) -> HttpBody:
        # `ui`: false, Envoy serves no web page (the bridge does)
        return await self._unary(request, context, server_pb2.GetPropsRequest(), "GetProps",
                                 lambda r, _q, _b: props_json(r, webui=False),
                                 body_of=_ignored, public=True)

    async def ListSlots(self, request: Any, context: Context) -> HttpBody:
        query = request.fail_on_no_slot if isinstance(request, http_pb2.ListSlotsQuery) else ""
        return await self._unary(HttpBody(), context,
                                 server_pb2.ListSlotsRequest(fail_on_no_slot=query),
                                 "ListSlots", lambda r, _q, _b: slots_json(r),
                                 body_of=_ignored)

    async def Cancel(self, request: Any, context: Context) -> HttpBody:
        return await self._unary(request, context, server_pb2.CancelRequest(), "Cancel",
                                 lambda r, _q, _b: {"found": r.found})

    async def Embed(self, request: Any, context: Context) -> HttpBody:
        return await self._unary(request, context, embedding_pb2.EmbedRequest(), "Embed",
                                 lambda r, _q, _b: native_json(r))

    async def OpenAIEmbed(self, request: Any, context: Context) -> HttpBody:
        return await self._unary(
            request, context, embedding_pb2.EmbedRequest(), "OpenAIEmbed",
            lambda r, _q, b: native_json(r) if wants_native(b) else openai_embed_json(r),
            lambda b: "Embed" if wants_native(b) else "OpenAIEmbed")

    async def Rerank(self, request: Any, context: Context) -> HttpBody:
        return await self._unary(request, context, embedding_pb2.RerankRequest(), "Rerank",
                                 lambda r, _q, b: rerank_json(r, b))

    async def Tokenize(self, request: Any, context: Context) -> HttpBody:
        return await self._unary(request, context, tokenize_pb2.TokenizeRequest(), "Tokenize",
                                 _tokenize_json)

    async def Detokenize(self, request: Any, context: Context) -> HttpBody:
        return await self._unary(request, context, tokenize_pb2.DetokenizeRequest(),
                                 "Detokenize", lambda r, _q, _b: {"content": r.content})

    async def ApplyTemplate(self, request: Any, context: Context) -> HttpBody:
        return await self._unary(request, context, chat_pb2.ChatCompletionRequest(),
                                 "ApplyTemplate", lambda r, _q, _b: {"prompt": r.prompt})


def _ignored(_raw: bytes) -> Json:
    """A GET route's body: the bridge does not read it."""
    return {}


def _adapters(raw: bytes) -> Json:
    body = parse_json(raw)
    if not isinstance(body, list):
        raise BridgeError.invalid_request("the request body must be a JSON array of "
                                          '{"id", "scale"} objects')
    return body


def _success(resp: Any, _req: Any, _body: Json) -> Json:
    return {"success": resp.success}


def _text(body: Any) -> HttpBody:
    """The bridge's plain Response: Starlette labels a text/* type with charset=utf-8."""
    content_type = body.content_type or "text/plain; version=0.0.4"
    if content_type.startswith("text/") and "charset=" not in content_type:
        content_type += "; charset=utf-8"
    return HttpBody(content_type=content_type, data=body.data)


def _tokenize_json(resp: Any, req: Any, _body: dict[str, Json]) -> Json:
    if req.with_pieces:
        piece = [{"id": p.id, "piece": list(p.piece_bytes) if p.HasField("piece_bytes")
                  else p.piece} for p in resp.pieces]
        return {"tokens": piece}
    return {"tokens": list(resp.tokens)}


def _ping_interval(req: Any, default: float) -> float:
    return float(req.sse_ping_interval) if req.HasField("sse_ping_interval") else default


def _id_header(inner: InnerContext) -> dict[str, str]:
    rid = inner.initial.get(REQUEST_ID_KEY)
    return {REQUEST_ID_KEY: rid} if rid else {}


async def _next(call: Any) -> Any:
    return await anext(call, None)


async def _collect(call: Any, first: Any) -> list[Any]:
    msgs = [first]
    while (msg := await _next(call)) is not None:
        if msg.HasField("error"):
            raise BridgeError.from_info(msg.error)
        msgs.append(msg)
    return msgs


async def _close(call: Any) -> None:
    """End an async generator (the typed RPC's: its cleanup cancels the generation and frees
    the slot); a no-op for None or one that has ended."""
    if call is not None:
        with contextlib.suppress(Exception):
            await call.aclose()
