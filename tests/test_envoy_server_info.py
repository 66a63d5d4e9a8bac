"""GET /server-info through a real Envoy (grpc_json_transcoder, rendered from the descriptor by
envoy/render.py) in front of the service: GetServerInfo's proto3 JSON with the proto field
names, equal to the same call over gRPC."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from envoy_harness import EnvoyProcess
from google.protobuf import json_format
from grpc_harness import running_service
from llama.v1 import server_info_pb2


@pytest.mark.slow
def test_server_info_through_envoy(tiny_bpe_path: Path, tmp_path: Path) -> None:
    with running_service(tiny_bpe_path, ctx=1024, parallel=2) as svc, \
            EnvoyProcess.start([svc.address], tmp_path) as envoy:
        response = httpx.get(envoy.base_url + "/server-info", timeout=30)
        ref = svc.stub().GetServerInfo(server_info_pb2.GetServerInfoRequest(), timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["api_version"] == "llama.v1" and body["context"]["total_slots"] == 2
    # Envoy prints fields without presence too (always_print_primitive_fields)
    assert body == json_format.MessageToDict(ref, preserving_proto_field_name=True,
                                             always_print_fields_with_no_presence=True)
