"""A client in another language: Node.js (@grpc/grpc-js + @grpc/proto-loader, from npm; installed
by `scripts/setup.sh --test`) loads protos/ and streams a Completion from the real service."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_harness import REPO, ServiceProcess, greedy

NODE_DIR = REPO / "tests" / "node"


def proto_include_dirs() -> list[Path]:
    """protos/, the well-known types and googleapis, as protos/generate.py finds them."""
    spec = importlib.util.spec_from_file_location("proto_generate", REPO / "protos" /
                                                  "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return list(module.include_dirs())


def run_node_client(address: str, request: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail("Node.js or the client's packages are missing: run scripts/setup.sh --test")
    proc = subprocess.run(
        [node, "completion_client.js", address, json.dumps(request),
         *map(str, proto_include_dirs())],
        cwd=NODE_DIR, capture_output=True, text=True, timeout=90, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    messages = [line["message"] for line in lines if "message" in line]
    status = next(line["status"] for line in lines if "status" in line)
    return messages, status


@pytest.mark.slow
def test_node_client_streams_a_completion(grpc_service: ServiceProcess,
                                          grpc_stub: Any) -> None:
    # google.protobuf.Value keeps protobufjs's camelCase field names (see the client).
    request = {"prompt": {"stringValue": "Hello from Node"}, "n_predict": 8,
               "temperature": 0, "stream": True}
    messages, status = run_node_client(grpc_service.address, request)
    assert status["code"] == grpc.StatusCode.OK.value[0], status
    assert messages[0]["id"].startswith("cmpl-")
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
def test_node_client_sees_invalid_argument(grpc_service: ServiceProcess) -> None:
    request = {"prompt": {"stringValue": "x"}, "top_p": 2, "stream": True}
    messages, status = run_node_client(grpc_service.address, request)
    assert status["code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "top_p" in status["details"] and messages == []
