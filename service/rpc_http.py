"""llama.v1.LlamaServerHttp: llama-server's REST routes as HTTP bodies in and out, for Envoy's
grpc_json_transcoder (protos/llama/v1/http.proto, docs/envoy.md).

Each RPC does what the REST bridge's route does, with the bridge's own pure code: the body is
parsed by rest_bridge.jsonio into the typed request, the typed RPC of llama.v1.LlamaServer runs
in-process (the same servicer object, no second gRPC hop), and its messages are rendered by
rest_bridge.render_* and framed by rest_bridge.sse_frames, as the bridge frames them, and
written by service/rpc_http_stream.py. Errors are BridgeError's JSON. So the bridge and Envoy
answer the same bytes; tests/test_two_front_doors.py compares them.

The HTTP status travels as the response metadata `x-http-status` (Envoy's Lua filter makes it
the `:status` and drops it), other headers (`x-request-id`, `cache-control`) as metadata too.
The gRPC status is OK even for an HTTP error: the error is the body.

Not a mixin of LlamaServicer: the HTTP service's RPCs have the typed service's names
(Completion, ...), so it is its own servicer object wrapping the typed one. What every route
needs is in service/rpc_http_base.py; the slot-file routes are service/rpc_http_slots.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.api.httpbody_pb2 import HttpBody
from llama.v1 import (
    chat_pb2,
    completion_pb2,
    embedding_pb2,
    http_pb2,
    server_info_pb2,
    server_pb2,
    tokenize_pb2,
)

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
from rest_bridge.sse_frames import Renderer
from service.rpc_base import Context
from service.rpc_http_base import (
    JSON,
    REQUEST_ID_KEY,
    SSE,
    InnerContext,
    body_bytes,
    bridge_error,
    close_quietly,
    send_error,
    send_head,
)
from service.rpc_http_slots import SlotHttpRpcs
from service.rpc_http_stream import SseWriter, write_sse


class LlamaHttpServicer(SlotHttpRpcs):
    """The HTTP-body RPCs over `typed`, the llama.v1.LlamaServer servicer."""

    # -- generation -------------------------------------------------------------------------
    async def Completion(self, request: Any, context: Context) -> None:
        await self._generate(request, context, completion_pb2.CompletionRequest(),
                             "Completion", NativeRenderer)

    async def Infill(self, request: Any, context: Context) -> None:
        await self._generate(request, context, completion_pb2.CompletionRequest(), "Infill",
                             NativeRenderer, check_input_extra)

    async def OpenAICompletion(self, request: Any, context: Context) -> None:
        await self._generate(request, context, completion_pb2.CompletionRequest(),
                             "OpenAICompletion", TextCompletionRenderer)

    async def ChatCompletion(self, request: Any, context: Context) -> None:
        await self._generate(request, context, chat_pb2.ChatCompletionRequest(),
                             "ChatCompletion", ChatRenderer)

    async def _generate(self, request: Any, context: Context, message: Any, rpc: str,
                        renderer_of: Callable[[Any], Renderer],
                        check: Callable[[dict[str, Json]], None] | None = None) -> None:
        """rest_bridge.generation.respond's answer: SSE when the request streams, else one
        JSON body; an error before the first event is an HTTP status, after it an event.
        Written with context.write (service/rpc_http_stream.py says why)."""
        inner = InnerContext(context)
        call: Any = None
        writer: SseWriter | None = None
        try:
            try:
                self._admit(context)
                body = parse_object(body_bytes(request))
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
                    await send_head(context, 200, headers)
                    await context.write(HttpBody(content_type=JSON,
                                                 data=dumps(renderer.result(msgs))))
                    return
            except (BridgeError, grpc.aio.AioRpcError) as e:
                await close_quietly(call)
                await context.write(await send_error(context, bridge_error(e)))
                return
            # The headers go out now, before the first token, as the bridge's SSEResponse
            # sends them (the transcoder sends them with the first message's content type).
            await send_head(context, 200, {"cache-control": "no-cache", **headers})
            await context.write(HttpBody(content_type=SSE))
            writer = SseWriter(context, _ping_interval(req, self._ping))
            await write_sse(call, first, renderer, writer)
        finally:
            # However this ends (the client gone: this call's task cancelled), the keep-alive
            # timer stops first, then the typed RPC's generator is closed, which cancels the
            # generation and frees its slot.
            if writer is not None:
                await writer.close()
            await close_quietly(call)

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
            body = body_of(body_bytes(request))
            req = to_message(wrap(body) if wrap is not None else body, message)
            if rpc_of is not None:
                rpc = rpc_of(body)
            resp = await getattr(self._typed, rpc)(req, InnerContext(context))
            out = render(resp, req, body)
        except (BridgeError, grpc.aio.AioRpcError) as e:
            return await send_error(context, bridge_error(e))
        await send_head(context, 200, {})
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
