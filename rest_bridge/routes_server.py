"""Server routes: GET /health (following gRPC health), GET/POST /props, GET /v1/models and
/models, GET /slots, POST /slots/{id_slot}, GET /metrics, GET/POST /lora-adapters, POST
/v1/chat/completions/control, and our GET /load, GET /server-info and POST /cancel. Bare JSON
arrays that the gRPC API wraps in a field are unwrapped here."""

from __future__ import annotations

import grpc
from fastapi import APIRouter, Request
from grpc_health.v1 import health_pb2
from llama.v1 import chat_pb2, server_info_pb2, server_pb2
from starlette.responses import Response

from rest_bridge.deps import Up, body_json, body_object, metadata
from rest_bridge.errors import BridgeError, error_response
from rest_bridge.generation import json_response
from rest_bridge.input_checks import path_slot_id
from rest_bridge.jsonio import message_json, to_message
from rest_bridge.render_server import (
    control_json,
    models_json,
    props_json,
    slot_action_json,
    slots_json,
)

router = APIRouter()
_HEALTH_TIMEOUT_S = 5.0


@router.get("/health")
@router.get("/v1/health")
async def health(up: Up) -> Response:
    try:
        resp = await up.health.Check(health_pb2.HealthCheckRequest(service=""),
                                     timeout=_HEALTH_TIMEOUT_S)
    except grpc.aio.AioRpcError as e:
        return error_response(BridgeError(503, f"the gRPC service is unreachable: "
                                               f"{e.details()}", "unavailable_error"))
    if resp.status == health_pb2.HealthCheckResponse.SERVING:
        return json_response({"status": "ok"})
    return error_response(BridgeError(503, "Loading model", "unavailable_error"))


@router.get("/props")
async def get_props(request: Request, up: Up) -> Response:
    resp = await up.llama.GetProps(server_pb2.GetPropsRequest(), metadata=metadata(request))
    # `ui`: the bridge serves its web page (off with --no-webui)
    return json_response(props_json(resp, bool(request.app.state.settings.webui)))


@router.post("/props")
async def set_props(request: Request, up: Up) -> Response:
    req = to_message({"props": await body_object(request)}, server_pb2.SetPropsRequest())
    resp = await up.llama.SetProps(req, metadata=metadata(request))
    return json_response({"success": resp.success})


@router.get("/v1/models")
@router.get("/models")
async def list_models(request: Request, up: Up) -> Response:
    resp = await up.llama.ListModels(server_pb2.ListModelsRequest(),
                                     metadata=metadata(request))
    return json_response(models_json(resp))


@router.get("/slots")
async def list_slots(request: Request, up: Up) -> Response:
    req = server_pb2.ListSlotsRequest(
        fail_on_no_slot=request.query_params.get("fail_on_no_slot", ""))
    resp = await up.llama.ListSlots(req, metadata=metadata(request))
    return json_response(slots_json(resp))


@router.post("/slots/{id_slot}")
async def slot_action(id_slot: str, request: Request, up: Up) -> Response:
    # The id as text, checked by the pure input_checks (the service's Envoy route runs it too).
    slot = path_slot_id(id_slot)
    body = await body_object(request)
    req = to_message({"options": body}, server_pb2.SlotActionRequest())
    req.id_slot = slot
    req.action = request.query_params.get("action", "")
    resp = await up.llama.SlotAction(req, metadata=metadata(request))
    return json_response(slot_action_json(resp))


@router.get("/metrics")
async def metrics(request: Request, up: Up) -> Response:
    resp = await up.llama.GetMetrics(server_pb2.GetMetricsRequest(),
                                     metadata=metadata(request))
    body = resp.prometheus
    return Response(body.data, media_type=body.content_type or "text/plain; version=0.0.4")


@router.get("/lora-adapters")
async def list_lora_adapters(request: Request, up: Up) -> Response:
    resp = await up.llama.ListLoraAdapters(server_pb2.ListLoraAdaptersRequest(),
                                           metadata=metadata(request))
    # llama-server writes task_name and prompt_prefix always, empty when the metadata has none
    return json_response([{**message_json(a), "task_name": a.task_name,
                           "prompt_prefix": a.prompt_prefix} for a in resp.adapters])


@router.post("/lora-adapters")
async def set_lora_adapters(request: Request, up: Up) -> Response:
    body = await body_json(request)
    if not isinstance(body, list):
        raise BridgeError.invalid_request("the request body must be a JSON array of "
                                          '{"id", "scale"} objects')
    req = to_message({"adapters": body}, server_pb2.SetLoraAdaptersRequest())
    resp = await up.llama.SetLoraAdapters(req, metadata=metadata(request))
    return json_response({"success": resp.success})


@router.get("/load")
async def get_load(request: Request, up: Up) -> Response:
    resp = await up.llama.GetLoad(server_pb2.GetLoadRequest(), metadata=metadata(request))
    return json_response(message_json(resp))


@router.get("/server-info")
async def get_server_info(request: Request, up: Up) -> Response:
    resp = await up.llama.GetServerInfo(server_info_pb2.GetServerInfoRequest(),
                                        metadata=metadata(request))
    return json_response(message_json(resp))


@router.post("/cancel")
async def cancel(request: Request, up: Up) -> Response:
    req = to_message(await body_object(request), server_pb2.CancelRequest())
    resp = await up.llama.Cancel(req, metadata=metadata(request))
    return json_response({"found": resp.found})


@router.post("/v1/chat/completions/control")
async def chat_control(request: Request, up: Up) -> Response:
    """llama-server's control of a running chat completion (reasoning_end)."""
    req = to_message(await body_object(request), chat_pb2.ControlChatCompletionRequest())
    resp = await up.llama.ControlChatCompletion(req, metadata=metadata(request))
    return json_response(control_json(resp))
