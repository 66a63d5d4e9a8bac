"""json_schema and response_format constrain generation through a grammar, as in llama-server."""

from __future__ import annotations

import json
from typing import Any

import grpc
import jsonschema
import pytest
from grpc_harness import chat_request, complete

SCHEMA = {"type": "object",
          "properties": {"ok": {"type": "boolean"},
                         "color": {"enum": ["red", "green", "blue"]}},
          "required": ["ok", "color"]}


def test_completion_json_schema_output_conforms(grpc_stub: Any) -> None:
    result = complete(grpc_stub, prompt="Answer in JSON:", json_schema=SCHEMA, n_predict=64,
                      temperature=0.7, seed=7)
    assert result.code == grpc.StatusCode.OK, result.details
    jsonschema.validate(json.loads(result.content), SCHEMA)


def test_chat_response_format_json_schema_conforms(grpc_stub: Any) -> None:
    req = chat_request(messages=[{"role": "user", "content": "Give me JSON"}], n_predict=64,
                       temperature=0.7, seed=3, stream=False,
                       response_format={"type": "json_schema",
                                        "json_schema": {"name": "x", "schema": SCHEMA}})
    (msg,) = list(grpc_stub.ChatCompletion(req, timeout=60))
    jsonschema.validate(json.loads(msg.choices[0].message.content), SCHEMA)


@pytest.mark.parametrize("body", [
    {"json_schema": {"not": {"type": "string"}}},
    {"json_schema": SCHEMA, "grammar": 'root ::= "x"'},
])
def test_unusable_schema_is_invalid_argument(grpc_stub: Any, body: dict[str, Any]) -> None:
    result = complete(grpc_stub, prompt="x", n_predict=4, **body)
    assert result.code == grpc.StatusCode.INVALID_ARGUMENT, result.details
