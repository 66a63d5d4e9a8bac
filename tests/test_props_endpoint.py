"""POST /props (SetProps, --props) and GET /props over real gRPC and the REST bridge: the pinned
llama-server changes no property, so an empty body succeeds and a body naming any property is
refused (400) with nothing changed; GET /props fills every field with the value in effect.
Without --props: tests/test_metrics.py (the disabled endpoints)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import struct_pb2
from llama.v1 import server_pb2
from test_metrics import Server, start

CAPS = {"supports_string_content", "supports_typed_content", "supports_tools",
        "supports_tool_calls", "supports_parallel_tool_calls", "supports_system_role",
        "supports_preserve_reasoning", "supports_reasoning_effort",
        "supports_object_arguments"}


@pytest.fixture(scope="module")
def server(tiny_bpe_path: Path) -> Iterator[Server]:
    s = start(tiny_bpe_path, "--props", "--metrics", "--temp", "0.3", "-n", "77")
    yield s
    s.svc.stop()


def test_empty_post_succeeds(server: Server) -> None:
    assert server.stub.SetProps(server_pb2.SetPropsRequest(), timeout=30).success
    r = httpx.post(server.url + "/props", json={}, timeout=30)
    assert r.status_code == 200 and r.json() == {"success": True}


@pytest.mark.parametrize("body", [{"n_ctx": 8}, {"total_slots": 1, "chat_template": "x"}])
def test_any_property_is_refused_and_nothing_changes(server: Server,
                                                     body: dict[str, Any]) -> None:
    before = httpx.get(server.url + "/props", timeout=30).json()
    r = httpx.post(server.url + "/props", json=body, timeout=30)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert all(repr(k) in error["message"] for k in body)
    props = struct_pb2.Struct()
    props.update(body)
    with pytest.raises(grpc.RpcError) as info:
        server.stub.SetProps(server_pb2.SetPropsRequest(props=props), timeout=30)
    err: Any = info.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert httpx.get(server.url + "/props", timeout=30).json() == before


def test_get_props_fills_every_field(server: Server) -> None:
    props = httpx.get(server.url + "/props", timeout=30).json()
    assert props["endpoint_props"] is True and props["endpoint_metrics"] is True
    assert props["endpoint_slots"] is True
    assert props["total_slots"] == 2 and props["model_path"].endswith(".gguf")
    assert props["chat_template"] and props["build_info"]
    # As llama-server's Jinja lexer keeps it: the model's template less its final newline.
    assert props["chat_template"].endswith("{%- endif %}")
    assert set(props["chat_template_caps"]) == CAPS
    # The pinned llama-server's shape: the defaults' params (numbers only) and the slot context.
    dgs = props["default_generation_settings"]
    assert set(dgs) == {"params", "n_ctx"} and dgs["n_ctx"] == 512
    assert dgs["params"]["temperature"] == pytest.approx(0.3)  # the server's --temp
    assert dgs["params"]["n_predict"] == 77  # its -n
    assert dgs["params"]["stream"] is False and "stop" not in dgs["params"]
    assert props["model_ftype"] == "F16" and props["ui"] is True
    assert props["ui_settings"] == {} and props["cors_proxy_enabled"] is False
