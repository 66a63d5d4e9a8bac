"""llama.v1.LlamaServerHttp's slot-file routes (protos/llama/v1/http.proto), as the bridge's
rest_bridge/routes_server.py and routes_slot_files.py answer them: POST /slots/{id_slot}
(SlotAction), GET /slots/{id_slot}/export (the snapshot's bytes, streamed) and POST
/slots/import (the body's bytes streamed in, one message a chunk as Envoy's transcoder sends
them). The slot ids are checked and the answers rendered by the bridge's pure modules, so both
front doors say the same; the typed RPCs run in-process as in service/rpc_http.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.api.httpbody_pb2 import HttpBody
from llama.v1 import http_pb2, server_pb2, slot_state_pb2

from rest_bridge.errors import BridgeError
from rest_bridge.input_checks import path_slot_id, query_slot_id
from rest_bridge.jsonio import dumps, parse_object, to_message
from rest_bridge.render_server import export_headers, import_slot_json, slot_action_json
from service.rpc_base import Context
from service.rpc_http_base import (
    JSON,
    LENGTH_KEY,
    HttpServicerBase,
    InnerContext,
    bridge_error,
    close_quietly,
    send_error,
    send_head,
)

OCTETS = "application/octet-stream"


def _decoded(request: Any, kind: type) -> Any:
    if not isinstance(request, kind):  # service.decode_guard's stand-in for bad bytes
        raise BridgeError.invalid_request("the request could not be decoded")
    return request


class SlotHttpRpcs(HttpServicerBase):
    async def SlotAction(self, request: Any, context: Context) -> HttpBody:
        try:
            self._admit(context)
            request = _decoded(request, http_pb2.SlotActionHttpRequest)
            id_slot = path_slot_id(request.id_slot)
            body = parse_object(bytes(request.body.data))
            req = to_message({"options": body}, server_pb2.SlotActionRequest())
            req.id_slot, req.action = id_slot, request.action
            resp = await self._typed.SlotAction(req, InnerContext(context))
        except (BridgeError, grpc.aio.AioRpcError) as e:
            return await send_error(context, bridge_error(e))
        await send_head(context, 200, {})
        return HttpBody(content_type=JSON, data=dumps(slot_action_json(resp)))

    async def ExportSlot(self, request: Any, context: Context) -> AsyncIterator[HttpBody]:
        call: Any = None
        try:
            try:
                self._admit(context)
                id_slot = path_slot_id(_decoded(request, http_pb2.ExportSlotHttpRequest).id_slot)
                call = self._typed.ExportSlot(slot_state_pb2.ExportSlotRequest(id_slot=id_slot),
                                              InnerContext(context))
                # Read before answering, as the bridge: a refusal is an HTTP error, not a cut
                # body.
                first = await anext(call, None)
                if first is None:
                    raise BridgeError(500, "ExportSlot ended without a chunk", "server_error")
            except (BridgeError, grpc.aio.AioRpcError) as e:
                yield await send_error(context, bridge_error(e))
                return
            headers = export_headers(id_slot, first.total_bytes)
            # content-length on the gRPC hop would be checked against the gRPC frames: it
            # travels under another name, which Envoy's Lua filter renames.
            headers[LENGTH_KEY] = headers.pop("content-length")
            await send_head(context, 200, headers)
            yield HttpBody(content_type=OCTETS, data=first.data)
            async for chunk in call:
                yield HttpBody(data=chunk.data)
        finally:
            await close_quietly(call)

    async def ImportSlot(self, request_iterator: Any, context: Context) -> HttpBody:
        try:
            self._admit(context)
            msg = await anext(request_iterator, None)  # none: an empty body, as from Envoy
            first = (http_pb2.ImportSlotHttpRequest() if msg is None
                     else _decoded(msg, http_pb2.ImportSlotHttpRequest))
            id_slot = query_slot_id(first.id_slot if first.HasField("id_slot") else None)
            resp = await self._typed.ImportSlot(
                _chunks(first, request_iterator, id_slot), InnerContext(context))
        except (BridgeError, grpc.aio.AioRpcError) as e:
            return await send_error(context, bridge_error(e))
        await send_head(context, 200, {})
        return HttpBody(content_type=JSON, data=dumps(import_slot_json(resp)))


async def _chunks(first: Any, rest: AsyncIterator[Any], id_slot: int) -> AsyncIterator[Any]:
    """The typed ImportSlot's chunks, as the bridge makes them from the body: the first always
    (an empty body is one empty chunk), then every non-empty piece."""
    yield slot_state_pb2.SlotStateChunk(id_slot=id_slot, data=first.body.data)
    async for msg in rest:
        data = _decoded(msg, http_pb2.ImportSlotHttpRequest).body.data
        if data:
            yield slot_state_pb2.SlotStateChunk(id_slot=id_slot, data=data)
