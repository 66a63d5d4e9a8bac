"""Tool calls, reasoning fields and `n` choices through a real Envoy (grpc_json_transcoder) in
front of the service (issue 18, item 5): the typed ChatCompletionChunk fields come out as
llama-server's JSON keys."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from envoy_harness import EnvoyProcess
from grpc_harness import running_service

pytestmark = pytest.mark.slow
TOOL: dict[str, Any] = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}},
    "required": ["city"]}}}
MESSAGES: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]


def _events(response: httpx.Response) -> list[Any]:
    """The JSON events of an OpenAI SSE answer (which ends with `data: [DONE]`)."""
    assert response.status_code == 200, response.text
    blocks = [b for b in response.text.split("\n\n") if b.strip()]
    assert blocks and blocks[-1] == "data: [DONE]"
    return [json.loads(b.removeprefix("data: ")) for b in blocks[:-1]]


@pytest.fixture(scope="module")
def client(tiny_bpe_path: Path, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[httpx.Client]:
    with running_service(tiny_bpe_path, parallel=3) as svc, \
            EnvoyProcess.start([svc.address], tmp_path_factory.mktemp("envoy")) as envoy, \
            httpx.Client(base_url=envoy.base_url, timeout=60.0) as c:
        yield c


def test_required_tool_call(client: httpx.Client) -> None:
    body = {"messages": MESSAGES, "tools": [TOOL], "tool_choice": "required",
            "parallel_tool_calls": False, "temperature": 0, "max_tokens": 80}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"])["city"] in ("Paris", "Rome")
    events = _events(client.post("/v1/chat/completions", json={**body, "stream": True}))
    first = [tc for e in events for c in e.get("choices", [])
             for tc in c.get("delta", {}).get("tool_calls", []) if tc.get("id")]
    assert [tc["function"]["name"] for tc in first] == ["get_weather"]
    assert first[0]["index"] == 0


def test_n_choices(client: httpx.Client) -> None:
    body = {"messages": MESSAGES, "n": 3, "temperature": 0, "max_tokens": 6, "stream": True}
    events = _events(client.post("/v1/chat/completions", json=body))
    finals = [c["index"] for e in events for c in e.get("choices", []) if c.get("finish_reason")]
    assert sorted(finals) == [0, 1, 2]
    response = client.post("/v1/chat/completions", json={**body, "n": 9})
    assert response.status_code == 400
