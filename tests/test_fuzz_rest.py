"""Property-based fuzzing of the REST bridge (issue 22, item 1): schemathesis generates requests
for every operation of the bridge's OpenAPI document (rest_bridge.openapi: every route,
llama-server's and the OpenAI ones, bodies described by the llama.v1 messages they are parsed
into), valid ones and ones that break the document (wrong types, missing fields), and sends them
over real HTTP to a real `llama-grpc-server` (gRPC service and bridge, tiny-bpe model). Every
answer must be a 2xx/3xx, a 4xx, or the documented 501/503; every error in llama-server's shape
(tests/fuzz_rest_checks.py); the server healthy afterwards.

The fast test sends a few hundred requests; the slow one at least 10,000 (docs/reliability.md
has the figures). FUZZ_REST_EXAMPLES=N overrides the examples per operation of the slow test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fuzz_rest_checks import Tally, answer_problem, assert_healthy
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from rest.rest_harness import RestServer
from schemathesis import GenerationMode

from rest_bridge.app import create_app
from rest_bridge.openapi import openapi_document

FAST_EXAMPLES = 6  # per operation and mode: ~40 operations, ~400 requests
SLOW_EXAMPLES = int(os.environ.get("FUZZ_REST_EXAMPLES", "260"))
SLOW_MINIMUM = 10_000
REQUEST_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def fuzz_server(tiny_bpe_path: Path) -> Iterator[RestServer]:
    # A small context bounds every generation: n_predict may be anything up to 2^31.
    server = RestServer(tiny_bpe_path, ctx=512, parallel=2)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def _schema(url: str) -> Any:
    schema = schemathesis.openapi.from_dict(openapi_document(create_app("127.0.0.1:0")))
    schema.config.update(base_url=url)
    return schema


def _operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


def _fuzz_operation(operation: Any, mode: GenerationMode, examples: int, url: str,
                    tally: Tally) -> None:
    label = f"{operation.method.upper()} {operation.path} ({mode.value})"

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = case.call(base_url=url, timeout=REQUEST_TIMEOUT_S)
        content_type = response.headers.get("content-type") or [""]
        if isinstance(content_type, list):  # schemathesis keeps every value of a header
            content_type = content_type[0]
        tally.record(label, response.status_code, response.content, content_type)

    try:
        run()
    except Unsatisfiable:
        # An operation without inputs has no invalid request to make (GET /health).
        assert mode == GenerationMode.NEGATIVE, label


def fuzz(url: str, examples: int) -> Tally:
    schema = _schema(url)
    tally = Tally()
    for operation in _operations(schema):
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz_operation(operation, mode, examples, url, tally)
    return tally


def test_document_covers_every_route(fuzz_server: RestServer) -> None:
    """Every route the bridge serves is in the document, with its body where it takes one."""
    document = openapi_document(create_app("127.0.0.1:0"))
    paths = document["paths"]
    for path in ("/completion", "/v1/chat/completions", "/v1/completions", "/tokenize",
                 "/v1/embeddings", "/props", "/slots/{id_slot}", "/health", "/metrics"):
        assert path in paths, path
    chat = paths["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]
    assert chat["schema"] == {"$ref": "#/components/schemas/llama.v1.ChatCompletionRequest"}
    props = document["components"]["schemas"]["llama.v1.ChatCompletionRequest"]["properties"]
    assert props["messages"]["type"] == "array" and "n_probs" in props
    assert props["n_probs"]["type"] == "integer"
    with httpx.Client(base_url=fuzz_server.url) as http:
        assert http.post("/tokenize", json={"content": "hi"}).status_code == 200


def test_error_shape_check() -> None:
    """The check itself: a bare 500, a 400 without the shape, a wrong code are problems."""
    good = b'{"error": {"code": 400, "message": "m", "type": "invalid_request_error"}}'
    assert answer_problem(400, good, "application/json") is None
    assert answer_problem(200, b"[]", "application/json") is None
    assert answer_problem(500, good.replace(b"400", b"500"), "application/json")
    assert answer_problem(400, b'{"detail": "x"}', "application/json")
    assert answer_problem(404, good, "application/json")
    assert answer_problem(400, b"oops", "text/plain")


def test_fuzz_rest_sample(fuzz_server: RestServer) -> None:
    tally = fuzz(fuzz_server.url, FAST_EXAMPLES)
    print(f"REST fuzzing sample: {tally.sent} requests, {sorted(tally.statuses.items())}")
    assert tally.failures == [], "\n".join(tally.failures)
    assert tally.sent >= 200, tally
    assert_healthy(fuzz_server.url)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_fuzz_rest_campaign(fuzz_server: RestServer) -> None:
    tally = fuzz(fuzz_server.url, SLOW_EXAMPLES)
    print(f"REST fuzzing: {tally.sent} requests, statuses {sorted(tally.statuses.items())}")
    assert tally.failures == [], "\n".join(tally.failures)
    assert tally.sent >= SLOW_MINIMUM or "FUZZ_REST_EXAMPLES" in os.environ, tally.sent
    assert_healthy(fuzz_server.url)


@pytest.mark.parametrize("request_line", [("GET", "/slots/{}/export"),
                                          ("POST", "/slots/{}?action=erase")])
@pytest.mark.parametrize("slot", [2**31, -(2**31) - 1, 10**30])
def test_slot_id_beyond_int32_is_400(fuzz_server: RestServer, request_line: tuple[str, str],
                                     slot: int) -> None:
    """Found by the fuzzer: a slot id beyond int32 was a 500 (the proto field refused it)."""
    method, path = request_line
    with httpx.Client(base_url=fuzz_server.url) as http:
        r = http.request(method, path.format(slot), json={})
    assert r.status_code == 400, r.text
    assert answer_problem(r.status_code, r.content, r.headers["content-type"]) is None
