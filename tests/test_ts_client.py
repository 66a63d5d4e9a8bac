"""TypeScript stubs (issue 25, item 7): `buf generate` with protos/buf.gen.yaml writes
protobuf-es stubs of llama.v1, tsc compiles tests/node/ts_client.ts against them, and the client
talks to the real service over Connect's gRPC transport: GetServerInfo equal to the Python
client's, a streamed completion under its own request id equal to the Python client's greedy
one. Node, buf, protoc-gen-es, tsc and Connect come from npm (tests/node, `scripts/setup.sh
--test`): missing, this test fails."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from grpc_harness import REPO, ServiceProcess, greedy
from llama.v1 import server_info_pb2
from test_buf import buf_check

NODE_DIR = REPO / "tests" / "node"


def _build_client(work: Path) -> Path:
    """Generate the stubs into work/gen, compile the client; the compiled script."""
    result = buf_check.generate(buf_check.PROTOS / "buf.gen.yaml", work / "gen")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (work / "gen" / "llama" / "v1" / "service_pb.ts").is_file()
    shutil.copy(NODE_DIR / "ts_client.ts", work / "ts_client.ts")
    (work / "node_modules").symlink_to(NODE_DIR / "node_modules")
    (work / "package.json").write_text('{"type": "module"}')
    (work / "tsconfig.json").write_text(json.dumps({
        "compilerOptions": {"target": "es2022", "module": "nodenext",
                            "moduleResolution": "nodenext", "strict": True, "outDir": "dist",
                            "skipLibCheck": True, "types": ["node"]},
        "include": ["ts_client.ts", "gen/**/*.ts"]}))
    tsc = NODE_DIR / "node_modules" / ".bin" / "tsc"
    if not tsc.is_file():
        pytest.fail("tsc is missing: run scripts/setup.sh --test")
    proc = subprocess.run([str(tsc), "-p", str(work)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return work / "dist" / "ts_client.js"


@pytest.mark.slow
def test_typescript_stubs_call_the_service(tmp_path: Path, grpc_service: ServiceProcess,
                                           grpc_stub: Any) -> None:
    script = _build_client(tmp_path)
    node = shutil.which("node")
    assert node is not None, "Node.js is missing"
    proc = subprocess.run([node, str(script), grpc_service.address, "Hello from TypeScript",
                           "6", "ts-client-1"], capture_output=True, text=True, timeout=90,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    ref_info = grpc_stub.GetServerInfo(server_info_pb2.GetServerInfoRequest(), timeout=30)
    assert lines[0]["server_info"] == json_format.MessageToDict(
        ref_info, preserving_proto_field_name=True)
    assert lines[1] == {"request_id": "ts-client-1"}
    messages = [line["message"] for line in lines[2:]]
    assert messages and all(m["id"] == "ts-client-1" for m in messages)
    assert messages[-1]["stop"] is True and messages[-1]["tokens_predicted"] == 6
    ref = greedy(grpc_stub, "Hello from TypeScript", 6)
    assert "".join(m.get("content", "") for m in messages) == ref.content
