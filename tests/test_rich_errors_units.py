"""Rich errors (issue 25, item 2), the pure logic: the reasons table agrees with the error kinds
and with docs/api.md; details survive encode -> gRPC trailer -> decode; a ServiceError's
defaults; the stream's in-band error; the bridge's reading of a status (grpc.aio.AioRpcError
built from the trailer the service sends). The end-to-end checks are in test_rich_errors.py.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc.aio import AioRpcError, Metadata

from api_common import rich_status
from api_common.errors import CONTEXT_OVERFLOW, DOMAIN, ERROR_KINDS, REASONS
from rest_bridge.errors import BridgeError, error_response
from service.drain import DrainGate
from service.errors import ServiceError, context_overflow
from service.rpc_base import ServicerBase
from service.rpc_errors import as_service_error, inband_error, not_served, status_of

DOCS = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def test_every_kind_has_a_reason_of_its_own_kind() -> None:
    for name, kind in ERROR_KINDS.items():
        assert REASONS[kind.reason].kind == name
    for reason, info in REASONS.items():
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", reason) and info.kind in ERROR_KINDS


def test_docs_list_exactly_the_reasons() -> None:
    text = DOCS.read_text(encoding="utf-8")
    section = text[text.index("### Error details (AIP-193)"):]
    rows = re.findall(r"^\| `([A-Z_]+)` \| `([A-Z_]+)` \|", section, re.MULTILINE)
    assert {r for r, _ in rows} == REASONS.keys()
    for reason, code in rows:
        assert ERROR_KINDS[REASONS[reason].kind].grpc_code.name == code, reason


class _Call:
    """What rich_status.decode reads of a failed call, from the status the service sends."""

    def __init__(self, status: Any) -> None:
        self._status = status

    def code(self) -> grpc.StatusCode:
        return self._status.code

    def details(self) -> str:
        return self._status.details  # type: ignore[no-any-return]

    def trailing_metadata(self) -> Any:
        return self._status.trailing_metadata


def _aio_error(err: ServiceError) -> AioRpcError:
    status = status_of(err)
    return AioRpcError(status.code, Metadata(), Metadata(*status.trailing_metadata),
                       status.details)


def test_details_round_trip() -> None:
    err = ServiceError("unavailable", "busy", reason="SHUTTING_DOWN", retry_after=1.5)
    d = rich_status.decode(_Call(status_of(err)))
    assert (d.reason, d.domain, d.metadata, d.retry_after) == ("SHUTTING_DOWN", DOMAIN, {}, 1.5)
    assert d.field_violations == []
    field = rich_status.decode(_Call(status_of(ServiceError("invalid_argument", "bad",
                                                            field="top_k"))))
    assert field.reason == "INVALID_FIELD" and field.field_violations == [("top_k", "bad")]
    assert field.retry_after is None


def test_a_status_without_details_decodes_as_none() -> None:
    bare = AioRpcError(grpc.StatusCode.INTERNAL, Metadata(), Metadata(), "x")
    assert rich_status.decode(bare) == rich_status.Details()


def test_service_error_defaults() -> None:
    assert ServiceError("invalid_argument", "x").reason == "INVALID_ARGUMENT"
    named = ServiceError("invalid_argument", "x", field="seed")
    assert named.reason == "INVALID_FIELD" and named.metadata == {"field": "seed"}
    assert ServiceError("resource_exhausted", "x").retry_after == 1.0
    assert ServiceError("invalid_argument", "x").retry_after is None
    with pytest.raises(AssertionError):
        ServiceError("internal", "x", reason=CONTEXT_OVERFLOW)


def test_a_param_error_with_a_field_is_invalid_field() -> None:
    from service.engine.params import ParamError

    err = as_service_error(ParamError("top_k must be >= 0", field="top_k"))
    assert (err.kind, err.reason, err.field) == ("invalid_argument", "INVALID_FIELD", "top_k")
    assert as_service_error(ValueError("no field")).reason == "INVALID_ARGUMENT"


def test_the_model_loading_is_unavailable_with_a_retry() -> None:
    with pytest.raises(ServiceError) as info:
        ServicerBase(lambda: None)._rt()
    assert info.value.reason == "LOADING_MODEL" and info.value.retry_after == 1.0
    assert info.value.info.grpc_code == grpc.StatusCode.UNAVAILABLE


def test_the_in_band_error_of_an_overflow_is_llama_servers() -> None:
    msg = inband_error(context_overflow(600, 512))
    assert (msg.code, msg.type, msg.reason) == (400, "exceed_context_size_error",
                                                "CONTEXT_OVERFLOW")
    assert (msg.n_prompt_tokens, msg.n_ctx) == (600, 512)
    assert msg.message == ("request (600 tokens) exceeds the available context size (512 "
                           "tokens), try increasing it")
    cancelled = inband_error(ServiceError("cancelled", "generation cancelled"))
    assert (cancelled.code, cancelled.reason) == (499, "CANCELLED")
    assert not cancelled.HasField("n_ctx")


def test_the_bridge_maps_an_overflow_to_llama_servers_json() -> None:
    e = BridgeError.from_rpc(_aio_error(context_overflow(600, 512)))
    assert e.body() == {"error": {
        "code": 400, "type": "exceed_context_size_error", "n_prompt_tokens": 600, "n_ctx": 512,
        "message": "request (600 tokens) exceeds the available context size (512 tokens), "
                   "try increasing it"}}
    assert e.headers == {}


@pytest.mark.parametrize(("delay", "header"), [(1.0, "1"), (1.5, "2"), (0.2, "1")])
def test_the_bridge_turns_retry_info_into_retry_after(delay: float, header: str) -> None:
    e = BridgeError.from_rpc(_aio_error(ServiceError("resource_exhausted", "full",
                                                     retry_after=delay)))
    assert e.status == 503 and e.type == "unavailable_error"
    assert error_response(e).headers["retry-after"] == header


def test_the_bridge_says_an_rpc_is_not_served() -> None:
    e = BridgeError.from_rpc(_aio_error(not_served("/llama.v1.LlamaServer/SlotAction")))
    assert (e.status, e.type) == (501, "not_supported_error")
    assert e.message == "This server does not support this endpoint yet."


def test_the_bridge_ignores_details_of_another_status() -> None:
    status = status_of(context_overflow(600, 512))
    # the same trailer on a different code: the code decides, the details are not trusted
    e = BridgeError.from_rpc(AioRpcError(grpc.StatusCode.INTERNAL, Metadata(),
                                         Metadata(*status.trailing_metadata), status.details))
    assert (e.status, e.type, e.extra) == (500, "server_error", {})


async def _refused_while_draining() -> AioRpcError:
    """A call to a real grpc.aio server (loopback) whose DrainGate is closed."""
    gate = DrainGate()
    server = grpc.aio.server(interceptors=[gate])

    async def echo(request: bytes, _context: Any) -> bytes:
        return request

    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "t.T", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        assert await gate.drain(1.0)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            with pytest.raises(AioRpcError) as info:
                await channel.unary_unary("/t.T/Echo")(b"x", timeout=10)
        return info.value
    finally:
        await server.stop(0)


def test_a_draining_server_says_retry_elsewhere() -> None:
    err = asyncio.run(_refused_while_draining())
    d = rich_status.decode(err)
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert (d.reason, d.domain, d.retry_after) == ("SHUTTING_DOWN", DOMAIN, 1.0)
