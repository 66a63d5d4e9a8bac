"""Our KV snapshots over HTTP (ExportSlot, ImportSlot; not llama-server's): GET
/slots/{id_slot}/export answers the snapshot's bytes (application/octet-stream), POST
/slots/import?id_slot=N takes them as the request body and answers ImportSlot's response.
Bytes, not the JSON of the gRPC messages with base64 chunks a transcoding proxy writes, so
that `curl -o` and `curl --data-binary @file` move a cache. Registered before the /slots
routes of routes_server, whose POST /slots/{id_slot} would otherwise take /slots/import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from llama.v1 import slot_state_pb2
from starlette.responses import Response, StreamingResponse

from rest_bridge.deps import Up, metadata
from rest_bridge.errors import BridgeError
from rest_bridge.generation import json_response
from rest_bridge.input_checks import path_slot_id, query_slot_id
from rest_bridge.render_server import export_headers, import_slot_json
from rest_bridge.upstream import next_message

router = APIRouter()
_OCTETS = "application/octet-stream"


@router.get("/slots/{id_slot}/export")
async def export_slot(id_slot: str, request: Request, up: Up) -> Response:
    slot = path_slot_id(id_slot)  # the pure check the service's Envoy route runs too
    call = up.llama.ExportSlot(slot_state_pb2.ExportSlotRequest(id_slot=slot),
                               metadata=metadata(request))
    # before answering: a refusal is an HTTP error, not a cut body
    first = await next_message(call)
    if first is None:
        raise BridgeError(500, "ExportSlot ended without a chunk", "server_error")

    async def body() -> AsyncIterator[bytes]:
        yield first.data
        async for chunk in call:
            yield chunk.data

    return StreamingResponse(body(), media_type=_OCTETS,
                             headers=export_headers(slot, first.total_bytes))


@router.post("/slots/import")
async def import_slot(request: Request, up: Up) -> Response:
    id_slot = query_slot_id(request.query_params.get("id_slot"))

    async def chunks() -> AsyncIterator[Any]:
        first = True
        async for data in request.stream():
            if data or first:
                yield slot_state_pb2.SlotStateChunk(id_slot=id_slot, data=data)
                first = False

    resp = await up.llama.ImportSlot(chunks(), metadata=metadata(request))
    return json_response(import_slot_json(resp))
