"""rest_bridge.protoparse must fill a message exactly as json_format.ParseDict(...,
ignore_unknown_fields=True) does, errors included, once a top-level integer field's number
with a fraction is truncated (llama-server's reading of 1.5 as 1): hand-picked bodies and a
seeded fuzz."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from llama.v1 import chat_pb2, completion_pb2, embedding_pb2, server_pb2, tokenize_pb2

from rest_bridge.protoparse import parse_into

_INT_TYPES = (FieldDescriptor.CPPTYPE_INT32, FieldDescriptor.CPPTYPE_INT64,
              FieldDescriptor.CPPTYPE_UINT32, FieldDescriptor.CPPTYPE_UINT64)
MESSAGES: list[type[Message]] = [
    completion_pb2.CompletionRequest, chat_pb2.ChatCompletionRequest,
    embedding_pb2.EmbedRequest, embedding_pb2.RerankRequest, tokenize_pb2.TokenizeRequest,
    server_pb2.CancelRequest,
]


def _outcome(parse: Any, body: dict[str, Any], cls: type[Message]) -> tuple[str, str]:
    message = cls()
    try:
        parse(body, message)
    except Exception as e:  # the outcome to compare is any exception
        return type(e).__name__, str(e)
    return "ok", message.SerializeToString(deterministic=True).hex()


def _reference(body: dict[str, Any], message: Message) -> None:
    ints = {k for f in message.DESCRIPTOR.fields if not f.is_repeated
            and f.cpp_type in _INT_TYPES for k in (f.name, f.json_name)}
    fixed = {k: int(v) if k in ints and type(v) is float and math.isfinite(v) else v
             for k, v in body.items()}
    json_format.ParseDict(fixed, message, ignore_unknown_fields=True)


def test_an_integer_field_takes_a_number_with_a_fraction_truncated() -> None:
    message = completion_pb2.CompletionRequest()
    parse_into({"top_k": 1.5, "n_predict": -2.7, "temperature": 0.5}, message)
    assert (message.top_k, message.n_predict, message.temperature) == (1, -2, 0.5)
    message = completion_pb2.CompletionRequest()  # a body that ParseDict reads whole
    parse_into({"return_tokens": True, "returnTokens": True, "seed": 7.9}, message)
    assert message.seed == 7
    with pytest.raises(json_format.ParseError):
        parse_into({"top_k": float("inf")}, completion_pb2.CompletionRequest())


def _assert_same(body: dict[str, Any], cls: type[Message]) -> tuple[str, str]:
    expected = _outcome(_reference, body, cls)
    assert _outcome(parse_into, body, cls) == expected, body
    return expected


BODIES: list[dict[str, Any]] = [
    {},
    {"prompt": "The quick brown fox", "n_predict": 128, "temperature": 0, "ignore_eos": True,
     "cache_prompt": False, "stream": True},
    {"prompt": [1, 2, "x"], "stop": ["\n", "###"], "n_probs": 2, "top_k": 40, "topK": 3},
    {"topK": 3, "top_k": 40},
    {"prompt": None, "temperature": None, "unknown": {"a": [1]}},
    {"temperature": float("nan")}, {"temperature": float("inf")}, {"temperature": 1e39},
    {"temperature": 10**400}, {"temperature": "0.5"}, {"temperature": True},
    {"n_predict": 2**40}, {"n_predict": 3.0}, {"n_predict": 3.5}, {"n_predict": "12"},
    {"n_predict": True}, {"n_predict": -1}, {"seed": 2**63}, {"seed": -1},
    {"stream": 1}, {"stream": "true"}, {"prompt": "\ud800 lone"}, {"prompt": 5},
    {"prompt": True}, {"prompt": 10**400}, {"stop": "\n"}, {"stop": 3},
    {"[ext]": 1}, {"n_predict": 1, "bad": 1, "top_k": "x", "stream": []},
    {"messages": [{"role": "user", "content": "hi"}], "model": "m", "max_tokens": 4},
    {"prompt": "a", "typed_prompt": {}}, {"typed_prompt": None, "prompt": "a"},
    {"prompt": None, "typed_prompt": {}}, {"typed_prompt": {}, "prompt": [1]},
    {"id": 7}, {"id": "7"}, {"content": "text", "add_special": True, "with_pieces": 1},
    # lists of strings: a Value (`input`, `prompt`, `content`) or a repeated string field
    # (`documents`, `stop`), set with extend
    {"input": ["a", "b c"], "documents": ["d", "é ☃"], "stop": ["\n"], "prompt": ["x", "y"]},
    {"input": [""], "content": ["one"], "texts": ["t"], "query": "q", "top_n": 2},
    {"input": ["a", "\ud800"]}, {"documents": ["a", "\udc00 b"]}, {"input": ["a", 1]},
    {"documents": ["a", None]}, {"documents": "a"}, {"input": []}, {"documents": []},
    {"input": ["a", ["b"]]}, {"stop": ["a", True]}, {"texts": ["a"], "documents": ["b"]},
]


@pytest.mark.parametrize("cls", MESSAGES, ids=lambda c: c.DESCRIPTOR.name)
def test_hand_picked_bodies_parse_as_parsedict(cls: type[Message]) -> None:
    outcomes = {_assert_same(body, cls)[0] for body in BODIES}
    assert outcomes >= {"ok", "ParseError"}  # both kinds of outcome were compared


_VALUES: list[Any] = [0, 1, -7, 2**31, 2**70, 0.5, -2.5, 1e300, float("nan"), True, False,
                      "", "text", "12", "\ud800", None, [], [1, "a"], {}, {"k": 1},
                      ["a"], ["a", "b", ""], ["\ud800"], ["a", 2]]


@pytest.mark.parametrize("cls", MESSAGES, ids=lambda c: c.DESCRIPTOR.name)
def test_random_bodies_parse_as_parsedict(cls: type[Message]) -> None:
    rng = random.Random(1234)
    names = [k for f in cls.DESCRIPTOR.fields for k in {f.name, f.json_name}] + ["nope"]
    ok = 0
    for _ in range(1500):
        body = {rng.choice(names): rng.choice(_VALUES) for _ in range(rng.randint(1, 6))}
        ok += _assert_same(body, cls)[0] == "ok"
    assert ok > 0


def test_lists_of_strings_are_set_without_parsedict(monkeypatch: pytest.MonkeyPatch) -> None:
    # The embedding and rerank bodies' usual shapes take the direct path (ParseDict costs ~5 us
    # a string); what they set is compared with ParseDict's above.
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("ParseDict was called")

    monkeypatch.setattr(json_format, "ParseDict", refuse)
    embed = parse_into({"input": ["a", "b"], "model": "m"}, embedding_pb2.EmbedRequest())
    assert [v.string_value for v in embed.input.list_value.values] == ["a", "b"]
    rerank = parse_into({"query": "q", "documents": ["x", "y", "z"], "top_n": 2},
                        embedding_pb2.RerankRequest())
    assert list(rerank.documents) == ["x", "y", "z"] and rerank.top_n == 2
