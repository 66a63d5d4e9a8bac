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

from rest_bridge.deps import SlotId, Up, metadata
from rest_bridge.errors import BridgeError
from rest_bridge.generation import json_response
from rest_bridge.jsonio import integral, message_json

router = APIRouter()
_OCTETS = "application/octet-stream"


@router.get("/slots/{id_slot}/export")
async def export_slot(id_slot: SlotId, request: Request, up: Up) -> Response:
    call = up.llama.ExportSlot(slot_state_pb2.ExportSlotRequest(id_slot=id_slot),
                               metadata=metadata(request))
    first = await call.read()  # before answering: a refusal is an HTTP error, not a cut body
    if first is None:
        raise BridgeError(500, "ExportSlot ended without a chunk", "server_error")

    async def body() -> AsyncIterator[bytes]:
        yield first.data
        async for chunk in call:
            yield chunk.data

    headers = {"Content-Length": str(first.total_bytes),
               "Content-Disposition": f'attachment; filename="slot-{id_slot}.bin"'}
    return StreamingResponse(body(), media_type=_OCTETS, headers=headers)


@router.post("/slots/import")
async def import_slot(request: Request, up: Up) -> Response:
    try:
        id_slot = int(request.query_params.get("id_slot", "0"))
    except ValueError:
        raise BridgeError.invalid_request("id_slot must be an integer") from None

    async def chunks() -> AsyncIterator[Any]:
        first = True
        async for data in request.stream():
            if data or first:
                yield slot_state_pb2.SlotStateChunk(id_slot=id_slot, data=data)
                first = False

    resp = await up.llama.ImportSlot(chunks(), metadata=metadata(request))
    return json_response(integral(message_json(resp), "n_read"))
