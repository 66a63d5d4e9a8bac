"""Issue 15 end to end: grammars that used to crash (or exhaust) the whole server are refused
with INVALID_ARGUMENT / HTTP 400 naming the limit, the server keeps serving, and grammars just
within the limits parse in libllama itself (service/grammar_limits.py says why the limits are
what they are)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_harness import GREEDY, REPO, ServiceProcess, complete, free_port, service_env
from grpc_health.v1 import health_pb2
from test_grammar_limits import chain_of, named_chain, nested, ref_chain

from service.grammar_limits import MAX_NESTING_DEPTH, MAX_RULE_CHAIN, check_grammar
from service.json_schema_grammar import MAX_SCHEMA_DEPTH

pytestmark = pytest.mark.slow

ISSUE_15 = nested(60_000)
GROUP_CHAIN = ("root ::= r0\n" + "".join(  # 141 KB: 70 rules of 1,000 groups, one chain
    f"r{i} ::= " + "(" * 1_000 + f"r{i + 1}" + ")" * 1_000 + "\n" for i in range(70))
    + 'r70 ::= "a"\n')
ENDLESS_REPEAT = 'root ::= "a"{3,1}'  # libllama generated rules until memory ran out
DEEP_SCHEMA = ref_chain(100, {"type": "integer"})  # flat JSON, converted 102 levels deep
DEEPEST_PATTERN = {"type": "string", "pattern": "^" + "(a|" * 99 + "b" + ")" * 99 + "$"}


def groups_in_a_chain() -> str:
    """Rules of 999 nested groups each, then named rules: a chain just under the limit."""
    grammar = "root ::= r0\n" + "".join(
        f"r{i} ::= " + "(" * 999 + f"r{i + 1}" + ")" * 999 + "\n" for i in range(3))
    named = MAX_RULE_CHAIN - chain_of(grammar + 'r3 ::= "a"\n')
    return grammar + "".join(f"r{i} ::= r{i + 1}\n" for i in range(3, 3 + named)) + \
        f'r{3 + named} ::= "a"\n'


# Each within every limit, and each close to one of them.
AT_THE_LIMITS = {
    "nesting": nested(MAX_NESTING_DEPTH),
    "named chain": named_chain(MAX_RULE_CHAIN - 2),
    "groups in a chain": groups_in_a_chain(),
    # Repetitions of rules that may be empty chain their generated rules (not reachable from
    # root: only the left-recursion check walks them).
    "repetition chain": 'root ::= "z"\na0 ::= | a1{0,1990}\na1 ::= | a2{0,1990}\na2 ::= | "x"',
    "expanded size": 'root ::= "' + "a" * 1_990 + '"{2000}',  # 3.98 million elements
}

# Parses each grammar of a JSON list with libllama on a threading.Thread (as the engine and the
# request workers do), with the stack size given in KiB (0: the platform's default).
_PROBE = """
import json, sys, threading
import native
model = native.Model(sys.argv[1], native.ModelParams(vocab_only=True))
grammars = json.load(open(sys.argv[2]))
threading.stack_size(int(sys.argv[3]) * 1024)
parsed = {}
def parse():
    for name, text in grammars.items():
        try:
            native.SamplerChain(model.vocab).grammar(text).close()
            parsed[name] = True
        except native.SamplerError:
            parsed[name] = False
thread = threading.Thread(target=parse)
thread.start()
thread.join()
print(json.dumps(parsed))
"""


@pytest.mark.parametrize("stack_kib", [0, 1024])
def test_grammars_at_the_limits_parse_in_libllama(tiny_bpe_path: Path, tmp_path: Path,
                                                  stack_kib: int) -> None:
    # 1 MiB is less than any thread here gets (8 MiB by default, 2 MiB where RLIMIT_STACK is
    # unlimited; the engine asks for more): the limits leave room even there.
    for text in AT_THE_LIMITS.values():
        check_grammar(text)
    assert chain_of(AT_THE_LIMITS["groups in a chain"]) > MAX_RULE_CHAIN - 10
    assert chain_of(AT_THE_LIMITS["repetition chain"]) > MAX_RULE_CHAIN - 20
    grammars = tmp_path / "grammars.json"
    grammars.write_text(json.dumps(AT_THE_LIMITS))
    run = subprocess.run(
        [sys.executable, "-c", _PROBE, str(tiny_bpe_path), str(grammars), str(stack_kib)],
        cwd=REPO, env=service_env(), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"libllama died ({run.returncode}):\n{run.stderr[-2000:]}"
    assert json.loads(run.stdout.splitlines()[-1]) == dict.fromkeys(AT_THE_LIMITS, True)


# -- through the server ---------------------------------------------------------------------------
class Served:
    def __init__(self, svc: ServiceProcess, url: str) -> None:
        self.svc, self.url, self.stub = svc, url, svc.stub()

    def alive(self) -> None:
        """The process still runs, reports SERVING, and completes a short request."""
        assert self.svc.proc.poll() is None, self.svc.log()[-3000:]
        status = self.svc.health().Check(health_pb2.HealthCheckRequest(), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        r = complete(self.stub, prompt="Hello", n_predict=3, **GREEDY)
        assert r.code == grpc.StatusCode.OK, r.details
        assert len(r.tokens) == 3


@pytest.fixture(scope="module")
def served(tiny_bpe_path: Path) -> Iterator[Served]:
    """The real service with its REST bridge (-c 2048 -np 2)."""
    rest_port = free_port()
    svc = ServiceProcess.launch(["-m", str(tiny_bpe_path), "-c", "2048", "-np", "2",
                                 "--port", str(rest_port)], free_port(), service_env())
    try:
        url = f"http://127.0.0.1:{rest_port}"
        deadline = time.monotonic() + 60
        while True:  # the bridge (a child process) may come up after gRPC
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, svc.log()[-3000:]
            time.sleep(0.2)
        yield Served(svc, url)
    finally:
        svc.stop()


def refused_grpc(served: Served, **fields: Any) -> str:
    r = complete(served.stub, prompt="x", n_predict=4, **fields)
    assert r.code == grpc.StatusCode.INVALID_ARGUMENT, (r.code, r.details)
    return r.details


def refused_rest(served: Served, path: str = "/completion", **fields: Any) -> str:
    body = {"prompt": "x"} if path == "/completion" else {
        "messages": [{"role": "user", "content": "x"}]}
    r = httpx.post(served.url + path, json={**body, "n_predict": 4, **fields}, timeout=60)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == 400 and error["type"] == "invalid_request_error"
    message: str = error["message"]
    return message


def test_grpc_refuses_issue_15s_grammar_and_serves_on(served: Served) -> None:
    details = refused_grpc(served, grammar=ISSUE_15)
    assert "60000 deep" in details and f"limit is {MAX_NESTING_DEPTH}" in details
    served.alive()


def test_rest_refuses_issue_15s_grammar_and_serves_on(served: Served) -> None:
    message = refused_rest(served, grammar=ISSUE_15)
    assert "60000 deep" in message and f"limit is {MAX_NESTING_DEPTH}" in message
    r = httpx.post(served.url + "/completion", json={"prompt": "Hello", "n_predict": 3},
                   timeout=60)
    assert r.status_code == 200 and r.json()["tokens_predicted"] == 3
    served.alive()


def test_other_grammars_that_took_the_server_down_are_refused(served: Served) -> None:
    assert "chains 70072 rules" in refused_grpc(served, grammar=GROUP_CHAIN)
    assert f"limit is {MAX_RULE_CHAIN}" in refused_rest(served, grammar=GROUP_CHAIN)
    assert "maximum is below the minimum" in refused_grpc(served, grammar=ENDLESS_REPEAT)
    served.alive()


def test_deep_json_schemas_are_refused(served: Served) -> None:
    limit = f"more than {MAX_SCHEMA_DEPTH} levels"
    assert limit in refused_grpc(served, json_schema=DEEP_SCHEMA)
    assert limit in refused_rest(served, json_schema=DEEP_SCHEMA)
    assert limit in refused_rest(served, "/v1/chat/completions", response_format={
        "type": "json_schema", "json_schema": {"schema": DEEP_SCHEMA}})
    served.alive()


def test_grammars_and_schemas_at_the_limits_are_served(served: Served) -> None:
    for name in ("nesting", "named chain", "groups in a chain"):
        r = complete(served.stub, prompt="x", n_predict=4, grammar=AT_THE_LIMITS[name],
                     **GREEDY)
        assert r.code == grpc.StatusCode.OK, (name, r.details)
        assert r.content == "a", name
    # The deepest conversion, with the deepest pattern innermost.
    deepest = ref_chain(MAX_SCHEMA_DEPTH - 2, DEEPEST_PATTERN)
    r = complete(served.stub, prompt="x", n_predict=2, json_schema=deepest, **GREEDY)
    assert r.code == grpc.StatusCode.OK, r.details
    served.alive()
