"""The bridge's /infill message (routes_completion.infill_request) must be what to_message makes
of the same body, errors included: its plain files are added directly (no ParseDict), anything
else takes to_message whole. Hand-picked bodies and a seeded fuzz of bodies that passed
check_input_extra."""

from __future__ import annotations

import random
from typing import Any

import pytest
from google.protobuf import json_format
from llama.v1 import completion_pb2

from rest_bridge.errors import BridgeError
from rest_bridge.input_checks import check_input_extra
from rest_bridge.jsonio import to_message
from rest_bridge.routes_completion import infill_request


def _outcome(make: Any, body: dict[str, Any]) -> tuple[str, str]:
    try:
        message = make(body)
    except BridgeError as e:
        return "400", str(e.body())
    return "ok", message.SerializeToString(deterministic=True).hex()


def _assert_same(body: dict[str, Any]) -> tuple[str, str]:
    check_input_extra(body)  # what the route checks first
    expected = _outcome(lambda b: to_message(b, completion_pb2.CompletionRequest()), body)
    assert _outcome(infill_request, body) == expected, body
    return expected


@pytest.mark.parametrize("body", [
    {"input_prefix": "a", "input_suffix": "b"},
    {"input_prefix": "a", "input_extra": []},
    {"input_extra": [{"text": "x = 1\n"}, {"filename": "b.py", "text": "é\n"}], "top_k": 3},
    {"input_extra": [{"filename": "", "text": ""}], "n_predict": 1.5, "samplers": "kt"},
    {"input_extra": [{"text": "x", "other": 1}]},  # an unknown key: to_message's path
    {"input_extra": [{"text": "x", "[ext.key]": 1}]},  # ParseDict's error
    {"input_extra": [{"text": "bad \ud800 surrogate"}]},  # ParseDict's error
    {"input_extra": [{"filename": "\udc00", "text": "x"}]},
    {"input_extra": [{"text": "x"}], "inputExtra": [{"text": "y"}]},  # one field twice
    {"input_extra": [{"text": "x"}], "top_k": "many"},  # another field's error
    {"input_extra": [{"text": "x"}], "prompt": [1, 2], "dry_sequence_breakers": ["a"]},
])
def test_hand_picked_bodies(body: dict[str, Any]) -> None:
    _assert_same(body)


def test_plain_files_parse_without_parsedict(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    real = json_format.ParseDict

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(json_format, "ParseDict", counting)  # the module protoparse calls
    body = {"input_prefix": "p", "input_extra": [{"filename": f"f{i}", "text": "t" * i}
                                                 for i in range(8)], "temperature": 0.0}
    req = infill_request(body)
    assert [(c.filename, c.text) for c in req.input_extra] == [
        (f"f{i}", "t" * i) for i in range(8)]
    assert calls == []


_TEXTS = ["", "x", "def f():\n    pass\n", "é ü 漢字", "tab\there", "\ud83d\ude00", "a\ud800"]


def _chunk(rng: random.Random) -> dict[str, Any]:
    chunk: dict[str, Any] = {"text": rng.choice(_TEXTS)}
    if rng.random() < 0.6:
        chunk["filename"] = rng.choice(_TEXTS)
    if rng.random() < 0.1:
        chunk[rng.choice(["x", "fileName", "TEXT"])] = rng.choice([1, "s", None])
    return chunk


def test_random_bodies() -> None:
    rng = random.Random(20)
    outcomes = set()
    for _ in range(400):
        body: dict[str, Any] = {"input_extra": [_chunk(rng) for _ in range(rng.randrange(4))]}
        for key, values in (("input_prefix", _TEXTS), ("n_predict", [1, 2.5, "x"]),
                            ("stream", [True, 1]), ("inputExtra", [[{"text": "y"}]])):
            if rng.random() < 0.3:
                body[key] = rng.choice(values)
        outcomes.add(_assert_same(body)[0])
    assert outcomes == {"ok", "400"}
