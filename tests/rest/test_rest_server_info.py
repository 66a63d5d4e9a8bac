"""GET /server-info through the REST bridge: GetServerInfo as plain JSON with the proto's
field names (every plain field written), behind the API key like every route but /health and
/props."""

from __future__ import annotations

import grpc
import httpx
from google.protobuf import json_format
from llama.v1 import server_info_pb2, service_pb2_grpc
from rest_harness import API_KEY, RestServer


def test_server_info_is_the_rpc_s_json(keyed_server: RestServer) -> None:
    with httpx.Client(base_url=keyed_server.url, timeout=60) as client:
        refused = client.get("/server-info")
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]["type"] == "authentication_error"
        r = client.get("/server-info", headers={"Authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    with grpc.insecure_channel(keyed_server.grpc_target) as channel:
        stub = service_pb2_grpc.LlamaServerStub(channel)
        resp = stub.GetServerInfo(server_info_pb2.GetServerInfoRequest(), timeout=30,
                                  metadata=(("authorization", f"Bearer {API_KEY}"),))
    assert body == json_format.MessageToDict(resp, preserving_proto_field_name=True,
                                             always_print_fields_with_no_presence=True)
    # keyed_server: -c 2048 -np 2; plain fields are written even when false or zero.
    assert body["context"]["n_ctx"] == 2048 and body["context"]["total_slots"] == 2
    assert body["context"]["max_queue"] == 0 and body["embedding"]["embeddings"] is False
    assert body["api_version"] == "llama.v1" and "server_info" in body["features"]
    assert isinstance(body["special_tokens"]["eog"], list)
