"""A client in another language: Node.js (@grpc/grpc-js + @grpc/proto-loader, protobufjs for the
error details; from npm, installed by `scripts/setup.sh --test`) loads protos/ and talks to the
real service (tests/node/completion_client.js): a streamed completion and a streamed chat equal
to the Python client's, its own request id coming back as x-request-id, an invalid request's
google.rpc details decoded from the grpc-status-details-bin trailer, GetServerInfo, and a
`stream: false` call cancelled by its id."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cancel_harness import ENDLESS, wait_free
from google.protobuf import json_format
from grpc_harness import REPO, ServiceProcess, chat_request, greedy, running_service
from llama.v1 import server_info_pb2

NODE_DIR = REPO / "tests" / "node"
OK = grpc.StatusCode.OK.value[0]


def proto_include_dirs() -> list[Path]:
    """protos/, the well-known types and googleapis, as protos/generate.py finds them."""
    spec = importlib.util.spec_from_file_location("proto_generate", REPO / "protos" /
                                                  "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return list(module.include_dirs())


def run_node(address: str, request: dict[str, Any], mode: str = "completion") -> list[Any]:
    """The client's JSON lines (metadata, message, cancel and last status)."""
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "protobufjs").is_dir():
        pytest.fail("Node.js or the client's packages are missing: run scripts/setup.sh --test")
    env = {**os.environ, "CLIENT_MODE": mode}
    env.pop("LLAMA_API_KEY", None)
    proc = subprocess.run(
        [node, "completion_client.js", address, json.dumps(request),
         *map(str, proto_include_dirs())],
        cwd=NODE_DIR, capture_output=True, text=True, timeout=90, check=False, env=env)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def run_node_client(address: str, request: dict[str, Any],
                    mode: str = "completion") -> tuple[list[Any], dict[str, Any]]:
    lines = run_node(address, request, mode)
    messages = [line["message"] for line in lines if "message" in line]
    status = next(line["status"] for line in lines if "status" in line)
    return messages, status


def _initial_metadata(lines: list[Any]) -> dict[str, Any]:
    found = [line["metadata"] for line in lines if "metadata" in line]
    assert len(found) == 1, lines
    return dict(found[0])


@pytest.mark.slow
def test_node_client_streams_a_completion(grpc_service: ServiceProcess,
                                          grpc_stub: Any) -> None:
    # google.protobuf.Value keeps protobufjs's camelCase field names (see the client).
    request = {"prompt": {"stringValue": "Hello from Node"}, "n_predict": 8,
               "temperature": 0, "stream": True}
    lines = run_node(grpc_service.address, request)
    messages = [line["message"] for line in lines if "message" in line]
    status = lines[-1]["status"]
    assert status["code"] == OK, status
    assert messages[0]["id"].startswith("cmpl-")
    # the id the server minted comes first, as metadata, then in every message
    assert _initial_metadata(lines)["x-request-id"] == messages[0]["id"]
    assert lines.index(next(line for line in lines if "metadata" in line)) == 0
    assert {m["id"] for m in messages} == {messages[0]["id"]}
    final = messages[-1]
    assert final["stop"] is True and final["stop_type"] == "limit"
    assert final["tokens_predicted"] == 8
    assert not any(m.get("stop") for m in messages[:-1])
    ref = greedy(grpc_stub, "Hello from Node", 8)
    assert "".join(m.get("content", "") for m in messages) == ref.content
    assert [t for m in messages for t in m.get("tokens", [])] == ref.tokens
    assert final["timings"]["predicted_n"] == 8
    assert final["tokens_evaluated"] == ref.final.tokens_evaluated


@pytest.mark.slow
def test_node_client_sends_its_own_request_id(grpc_service: ServiceProcess) -> None:
    request = {"prompt": {"stringValue": "Named"}, "n_predict": 3, "stream": True,
               "request_id": "node-client-7"}
    lines = run_node(grpc_service.address, request)
    assert lines[-1]["status"]["code"] == OK, lines[-1]
    assert _initial_metadata(lines)["x-request-id"] == "node-client-7"
    messages = [line["message"] for line in lines if "message" in line]
    assert messages and all(m["id"] == "node-client-7" for m in messages)


@pytest.mark.slow
def test_node_client_decodes_the_error_details(grpc_service: ServiceProcess) -> None:
    request = {"prompt": {"stringValue": "x"}, "n_probs": -3, "stream": True}
    messages, status = run_node_client(grpc_service.address, request)
    assert status["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "n_probs" in status["details"] and messages == []
    details = {d["@type"]: d for d in status["error_details"]}
    info = details["google.rpc.ErrorInfo"]
    assert info["domain"] == "llama.v1" and info["reason"] == "INVALID_FIELD", info
    violations = details["google.rpc.BadRequest"]["field_violations"]
    assert [v["field"] for v in violations] == ["n_probs"], violations


@pytest.mark.slow
def test_node_client_streams_a_chat(grpc_service: ServiceProcess, grpc_stub: Any) -> None:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "Hi from Node"}],
                            "max_tokens": 6, "temperature": 0, "stream": True}
    node_body = {**body, "messages": [{"role": "user",
                                       "content": {"stringValue": "Hi from Node"}}]}
    messages, status = run_node_client(grpc_service.address, node_body, mode="chat")
    assert status["code"] == OK, status
    assert messages[0]["choices"][0]["delta"]["role"] == "assistant"
    assert {m["id"] for m in messages} == {messages[0]["id"]}
    assert messages[0]["id"].startswith("chatcmpl-")
    final = messages[-1]
    assert final["choices"][0]["finish_reason"] == "length"
    assert final["usage"]["completion_tokens"] == 6
    text = "".join(c["delta"].get("content", "") for m in messages for c in m["choices"])
    ref = list(grpc_stub.ChatCompletion(chat_request(**body), timeout=60))
    assert text == "".join(c.delta.content for m in ref for c in m.choices)


@pytest.mark.slow
def test_node_client_reads_the_server_info(grpc_service: ServiceProcess,
                                           grpc_stub: Any) -> None:
    messages, status = run_node_client(grpc_service.address, {}, mode="server-info")
    assert status["code"] == OK, status
    [info] = messages
    ref = grpc_stub.GetServerInfo(server_info_pb2.GetServerInfoRequest(), timeout=30)
    expected = json_format.MessageToDict(ref, preserving_proto_field_name=True)
    # proto-loader with defaults off leaves out what proto3 JSON leaves out
    assert info == expected


@pytest.fixture(scope="module")
def endless_service(tiny_bpe_path: Path) -> Iterator[ServiceProcess]:
    """One slot with --context-shift, where ENDLESS requests run until cancelled."""
    with running_service(tiny_bpe_path, "--context-shift", ctx=512, parallel=1) as svc:
        yield svc


@pytest.mark.slow
def test_node_client_cancels_a_non_streamed_call_by_id(
        endless_service: ServiceProcess) -> None:
    request = {"prompt": {"stringValue": "Go on"}, "stream": False,
               "request_id": "node-cancel-1", **ENDLESS}
    lines = run_node(endless_service.address, request, mode="cancel")
    assert _initial_metadata(lines)["x-request-id"] == "node-cancel-1"
    cancel = next(line["cancel"] for line in lines if "cancel" in line)
    assert cancel == {"found": True}
    messages = [line["message"] for line in lines if "message" in line]
    status = lines[-1]["status"]
    assert status["code"] == grpc.StatusCode.CANCELLED.value[0], status
    # stream = false: the one message is the final one, carrying the cancellation
    assert len(messages) == 1 and messages[0]["id"] == "node-cancel-1"
    assert messages[0]["error"]["type"] == "cancelled_error"
    [info] = status["error_details"]
    assert (info["@type"], info["reason"]) == ("google.rpc.ErrorInfo", "CANCELLED")
    wait_free(endless_service.stub())
