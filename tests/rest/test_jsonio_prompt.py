"""A prompt of token ids crosses the bridge as `typed_prompt` (cheap) rather than a
google.protobuf.Value; the service must read it exactly as the JSON prompt it stands for."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import json_format
from llama.v1 import completion_pb2

from rest_bridge.errors import BridgeError
from rest_bridge.jsonio import to_message
from service.prompt_values import prompt_json


@pytest.mark.parametrize("prompt", [
    [1, 2, 3], [0], list(range(1000)), [-5, 2**31 - 1],  # token ids only: typed
    "text", [], [1, "two", 3], [[1, 2], [3]], [1.0, 2], [True, 2], [2**31],  # as a Value
])
def test_the_service_reads_the_prompt_as_the_json_it_came_from(prompt: Any) -> None:
    body = {"prompt": prompt, "n_predict": 4}
    req = to_message(dict(body), completion_pb2.CompletionRequest())
    typed = type(prompt) is list and bool(prompt) and all(
        type(t) is int and -(2**31) <= t < 2**31 for t in prompt)
    assert req.WhichOneof("prompt_input") == ("typed_prompt" if typed else "prompt")
    reference = json_format.ParseDict(body, completion_pb2.CompletionRequest())
    assert prompt_json(req) == prompt_json(reference)
    assert req.n_predict == 4


def test_a_body_naming_both_prompt_forms_is_left_to_parsedict() -> None:
    body = {"prompt": [1, 2], "typed_prompt": {"prompts": [{"pieces": [{"text": "a"}]}]}}
    with pytest.raises(Exception, match="oneof"):
        to_message(body, completion_pb2.CompletionRequest())


@pytest.mark.parametrize("extra", [
    {"return_tokens": True, "returnTokens": False},  # one field twice: the order decides
    {"typedPrompt": {"prompts": [{"pieces": [{"text": "a"}]}]}},  # the other prompt form
    {"nPredict": 3, "seed": 5},
    {"n_predict": "many"},  # a wrong type elsewhere: still a 400
])
def test_a_token_prompt_is_read_as_parsedict_reads_the_whole_body(extra: dict[str, Any]) -> None:
    body = {"prompt": [1, 2, 3], **extra}
    try:
        reference = json_format.ParseDict(body, completion_pb2.CompletionRequest(),
                                          ignore_unknown_fields=True)
    except json_format.ParseError:
        with pytest.raises(BridgeError):
            to_message(dict(body), completion_pb2.CompletionRequest())
        return
    req = to_message(dict(body), completion_pb2.CompletionRequest())
    assert prompt_json(req) == prompt_json(reference) == [1, 2, 3]
    req.ClearField("typed_prompt")
    reference.ClearField("prompt")
    assert req == reference  # every other field as ParseDict set it
