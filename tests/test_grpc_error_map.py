"""Every RPC of llama.v1.LlamaServer against bad input: the status code and message a client gets.

One table, `CASES`, maps each RPC (listed from the service descriptor, so an RPC added to the
proto without a case here fails the test) to its cases: a request, the expected status and a
fragment of the expected message. Bad input is never answered UNKNOWN (an exception nobody
mapped) nor INTERNAL (reserved for bugs, service/errors.py); RPCs with no bad input possible
answer OK; RPCs this server's configuration does not enable (NOT_IN_THIS_CONFIG) answer
UNIMPLEMENTED with a message, as llama-server answers 501 there. A stream that fails after
messages have flowed ends with a message carrying the same error (docs/api.md, streaming
contract). All cases run against one server with a single small slot (-c 256 -np 1), which
must still serve a normal completion afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import pytest
from google.protobuf import message_factory
from grpc_harness import ServiceProcess, chat_request, complete, completion_request, running_service
from llama.v1 import (
    chat_pb2,
    common_pb2,
    server_pb2,
    service_pb2,
    slot_state_pb2,
    tokenize_pb2,
)

SERVICE = service_pb2.DESCRIPTOR.services_by_name["LlamaServer"]
CTX = 256  # one slot of 256 tokens: a prompt of 300 words does not fit
OUTSIDE_VOCAB = 1_000_000  # above any vocabulary, inside int32
OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
UNIMPLEMENTED = grpc.StatusCode.UNIMPLEMENTED


class Case(NamedTuple):
    name: str
    request: Any
    code: grpc.StatusCode
    fragment: str  # expected in the status message (case-insensitive); "" for OK
    check: Callable[[Any], None] | None = None  # on the response (unary) or the messages


def cmpl(**fields: Any) -> Any:
    """A short CompletionRequest with `fields` on top; a field set to None is left out."""
    body = {"prompt": "Hello", "n_predict": 2, **fields}
    return completion_request(**{k: v for k, v in body.items() if v is not None})


def chat(**fields: Any) -> Any:
    return chat_request(**{"messages": [{"role": "user", "content": "Hello"}],
                           "n_predict": 2, **fields})


def _control_refused(resp: Any) -> None:
    assert not resp.success and resp.message == "no active completion for this id"


def _request_of(rpc: str) -> Any:
    """An empty request of the RPC's input type."""
    return message_factory.GetMessageClass(SERVICE.methods_by_name[rpc].input_type)()


# Many optional properties: the converter builds a chain of "-rest" rules, one level of Python
# recursion per property (RecursionError, an exception nobody maps, at the time of writing).
MANY_OPTIONAL = {"type": "object",
                 "properties": {f"p{i}": {"type": "integer"} for i in range(2000)}}
# 17 `properties` levels: within JSON's and the client's limits, beyond the 100 nested messages
# protobuf decodes on the server (grpcio would answer UNKNOWN without service.decode_guard).
NESTED_17: dict[str, Any] = {"type": "string"}
for _ in range(17):
    NESTED_17 = {"type": "object", "properties": {"x": NESTED_17}}

COMPLETION_CASES = [
    Case("missing prompt", cmpl(prompt=None), INVALID, "prompt"),
    Case("NaN temperature", cmpl(temperature="NaN"), INVALID, "temperature"),
    Case("n_probs 101", cmpl(n_probs=101), INVALID, "n_probs"),
    Case("id_slot out of range", cmpl(id_slot=1), INVALID, "id_slot"),
    Case("token id outside the vocabulary", cmpl(prompt=[1, OUTSIDE_VOCAB]), INVALID,
         "vocabulary"),
    Case("unparsable grammar", cmpl(grammar="root ::= ("), INVALID, "grammar"),
    Case("grammar and json_schema", cmpl(grammar='root ::= "a"',
                                         json_schema={"type": "string"}), INVALID,
         "json_schema"),
    Case("json_schema too deep for the converter", cmpl(json_schema=MANY_OPTIONAL), INVALID,
         "schema"),
    Case("json_schema nested beyond protobuf's decoder", cmpl(json_schema=NESTED_17), INVALID,
         "could not be decoded"),
    Case("prompt longer than the slot's context", cmpl(prompt="word " * 300), INVALID,
         "context"),
    Case("n_predict -5", cmpl(n_predict=-5), INVALID, "n_predict"),
    Case("logit_bias of the wrong shape", cmpl(logit_bias=[[1, 2, 3]]), INVALID, "logit_bias"),
]


def _cancel_not_found(resp: Any) -> None:
    assert resp.found is False


def _one_slot(resp: Any) -> None:
    assert resp.total_slots == 1


def _has_a_model(resp: Any) -> None:
    assert len(resp.data) == 1 and resp.data[0].id


def _tokens(resp: Any) -> None:
    assert len(resp.tokens) > 0


# RPCs this server (a generation model without FIM tokens, started without --props,
# --slot-save-path or --metrics) answers as llama-server does in that configuration: 501.
NOT_IN_THIS_CONFIG = {
    "Embed": "a generation model", "OpenAIEmbed": "a generation model",
    "Rerank": "a generation model", "Infill": "a model without FIM tokens",
    "SetProps": "without --props", "SlotAction": "without --slot-save-path",
    "GetMetrics": "without --metrics",
}


_control = chat_pb2.ControlChatCompletionRequest


def _no_adapters(resp: Any) -> None:
    assert list(resp.adapters) == []

CASES: dict[str, list[Case]] = {
    "Completion": COMPLETION_CASES,
    "OpenAICompletion": [*COMPLETION_CASES,
                         Case("echo", cmpl(echo=True), INVALID, "echo")],
    "ChatCompletion": [
        Case("empty messages", chat_request(messages=[]), INVALID, "messages"),
        Case("bad response_format type", chat(response_format={"type": "xml"}), INVALID,
             "response_format"),
        Case("n 2 with one slot", chat(n=2), INVALID, "n must be between 1 and 1"),
        Case("unknown role", chat(messages=[{"role": "wizard", "content": "Hi"}]), INVALID,
             "role"),
    ],
    "ApplyTemplate": [
        Case("empty messages", chat_request(messages=[]), INVALID, "messages"),
    ],
    # Tokenize has no bad input left to send: `content` is a proto string (valid UTF-8 by
    # construction) and llama_tokenize's one error, an int32 overflow, needs > 2 GiB of text,
    # far above the 64 MiB message limit. An empty text is valid.
    "Tokenize": [
        Case("empty content is valid", tokenize_pb2.TokenizeRequest(content=""), OK, ""),
        Case("special tokens are valid",
             tokenize_pb2.TokenizeRequest(content="<|eot_id|>Hi", with_pieces=True), OK, "",
             _tokens),
    ],
    "Detokenize": [
        Case("token id outside the vocabulary",
             tokenize_pb2.DetokenizeRequest(tokens=[1, OUTSIDE_VOCAB]), INVALID, "vocabulary"),
        Case("negative token id", tokenize_pb2.DetokenizeRequest(tokens=[1, -1]), INVALID,
             "vocabulary"),
    ],
    "ControlChatCompletion": [
        Case("missing id", _control(action="reasoning_end"), INVALID, "missing completion id"),
        Case("unknown action", _control(id="chatcmpl-x", action="stop"), INVALID,
             "unknown control action"),
        Case("unknown id", _control(id="chatcmpl-x", action="reasoning_end"), OK, "",
             _control_refused),
    ],
    "Cancel": [
        Case("unknown id", server_pb2.CancelRequest(id="cmpl-no-such-generation"), OK, "",
             _cancel_not_found),
    ],
    "GetProps": [Case("no input", server_pb2.GetPropsRequest(), OK, "", _one_slot)],
    "ListModels": [Case("no input", server_pb2.ListModelsRequest(), OK, "", _has_a_model)],
    "GetLoad": [Case("no input", _request_of("GetLoad"), OK, "", _one_slot)],
    "GetServerInfo": [Case("no input", _request_of("GetServerInfo"), OK, "",
                           lambda resp: _one_slot(resp.context))],
    "ListSlots": [Case("no input", _request_of("ListSlots"), OK, "",
                       lambda resp: _one_slot_listed(resp))],
    "ListLoraAdapters": [Case("no adapters loaded", _request_of("ListLoraAdapters"), OK, "",
                              _no_adapters)],
    "SetLoraAdapters": [Case("an id that does not exist", server_pb2.SetLoraAdaptersRequest(
        adapters=[common_pb2.LoraScale(id=3, scale=1.0)]), INVALID, "3")],
    "ExportSlot": [Case("slot out of range", slot_state_pb2.ExportSlotRequest(id_slot=5),
                        INVALID, "Invalid slot ID: 5")],
    "ImportSlot": [Case("not a slot file", slot_state_pb2.SlotStateChunk(data=b"garbage"),
                        INVALID, "not a slot file")],
    **{rpc: [Case(why, _request_of(rpc), UNIMPLEMENTED, "")]
       for rpc, why in NOT_IN_THIS_CONFIG.items()},
}


def _one_slot_listed(resp: Any) -> None:
    assert [s.id for s in resp.slots] == [0]

MISSING = Case("no case written for this RPC", None, OK, "")
PARAMS = [pytest.param(rpc, case, id=f"{rpc}-{case.name}")
          for rpc in SERVICE.methods_by_name for case in CASES.get(rpc, [MISSING])]


@pytest.fixture(scope="module")
def service(tiny_bpe_path: Path) -> Iterator[ServiceProcess]:
    with running_service(tiny_bpe_path, ctx=CTX, parallel=1) as svc:
        yield svc


@pytest.fixture(scope="module")
def stub(service: ServiceProcess) -> Any:
    return service.stub()


def invoke(stub: Any, rpc: str, request: Any) -> tuple[grpc.StatusCode, str, Any]:
    """(status, message, response or the list of streamed messages) of one call."""
    method = SERVICE.methods_by_name[rpc]
    call = getattr(stub, rpc)
    messages: list[Any] = []
    try:
        if method.client_streaming:  # one message, then the end of the client's stream
            return OK, "", call(iter([request]), timeout=60)
        if method.server_streaming:
            for msg in call(request, timeout=60):
                messages.append(msg)
            return OK, "", messages
        return OK, "", call(request, timeout=60)
    except grpc.RpcError as e:
        return e.code(), e.details() or "", messages


@pytest.mark.slow
@pytest.mark.parametrize(("rpc", "case"), PARAMS)
def test_bad_input_gets_its_status(stub: Any, rpc: str, case: Case) -> None:
    assert case is not MISSING, f"{rpc} has no case in CASES: add its bad inputs (or OK ones)"
    code, details, out = invoke(stub, rpc, case.request)
    assert code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), (code, details)
    assert code == case.code, (code, details)
    if code == OK:
        if case.check is not None:
            case.check(out)
        if SERVICE.methods_by_name[rpc].server_streaming:
            assert out and not any(m.HasField("error") for m in out)
        return
    assert details.strip(), "an error status needs a message"
    assert case.fragment.lower() in details.lower(), details
    if out:  # failed after the stream started: the last message carries the same error
        assert out[-1].HasField("error"), out[-1]
        assert out[-1].error.message == details
        assert out[-1].error.code >= 400


@pytest.mark.slow
def test_the_server_still_serves_a_completion(stub: Any) -> None:
    """Runs last in this module: after every bad input, a normal completion succeeds."""
    r = complete(stub, prompt="Still serving?", n_predict=3, temperature=0.0)
    assert r.code == OK, r.details
    assert len(r.tokens) == 3
    assert not r.final.HasField("error")
