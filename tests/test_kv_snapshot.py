"""KV snapshots over gRPC (ExportSlot / ImportSlot) between two real server processes of the
same model: the cache moves, and the next request on the second server reuses it
(timings.cache_n) and generates what the first one did. Refused: a snapshot of another model,
another format version, a corrupt or oversized one; both RPCs need the API key."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_harness import GREEDY, ServiceProcess, complete, running_service
from llama.v1 import slot_state_pb2

PROMPT = "The lighthouse keeper climbed the stairs at dusk and saw"
API_KEY = "snapshot-key-1"


@pytest.fixture(scope="module")
def first(tiny_bpe_path: Path) -> Iterator[ServiceProcess]:
    with running_service(tiny_bpe_path, "--api-key", API_KEY, ctx=1024, parallel=2) as svc:
        yield svc


@pytest.fixture(scope="module")
def second(tiny_bpe_path: Path) -> Iterator[ServiceProcess]:
    with running_service(tiny_bpe_path, "--api-key", API_KEY, ctx=1024, parallel=2) as svc:
        yield svc


AUTH = (("authorization", f"Bearer {API_KEY}"),)


def export(stub: Any, id_slot: int) -> list[Any]:
    return list(stub.ExportSlot(slot_state_pb2.ExportSlotRequest(id_slot=id_slot),
                                metadata=AUTH, timeout=60))


def import_(stub: Any, id_slot: int, data: Iterable[bytes]) -> Any:
    chunks = [slot_state_pb2.SlotStateChunk(id_slot=id_slot, data=d) for d in data]
    return stub.ImportSlot(iter(chunks), metadata=AUTH, timeout=60)


def import_refused(stub: Any, data: bytes) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        import_(stub, 0, [data])
    return info.value


@pytest.fixture(scope="module")
def snapshot(first: ServiceProcess) -> tuple[Any, bytes]:
    """A conversation's cache on the first server, exported; the result of its request."""
    r = complete(first.stub(), prompt=PROMPT, n_predict=6, id_slot=1, metadata=AUTH, **GREEDY)
    assert r.code == grpc.StatusCode.OK, r.details
    chunks = export(first.stub(), 1)
    data = b"".join(c.data for c in chunks)
    assert chunks[0].total_bytes == len(data) and chunks[0].n_tokens > 0
    assert all(c.id_slot == 1 for c in chunks)
    return r, data


def test_a_cache_moves_to_another_server_and_is_reused(second: ServiceProcess,
                                                       snapshot: tuple[Any, bytes]) -> None:
    before, data = snapshot
    stub = second.stub()
    # Sent in uneven pieces: only the concatenation counts.
    pieces = [data[i:i + 777] for i in range(0, len(data), 777)]
    resp = import_(stub, 0, pieces)
    assert resp.id_slot == 0 and resp.n_read == len(data)
    assert resp.n_restored == before.final.tokens_evaluated + 6 - 1
    assert resp.timings.HasField("restore_ms")
    after = complete(stub, prompt=PROMPT, n_predict=6, id_slot=0, metadata=AUTH, **GREEDY)
    assert after.code == grpc.StatusCode.OK, after.details
    assert after.final.timings.cache_n == before.final.tokens_evaluated - 1
    assert after.tokens == before.tokens


def test_another_models_snapshot_is_refused(tiny_spm_path: Path,
                                            snapshot: tuple[Any, bytes]) -> None:
    with (running_service(tiny_spm_path, ctx=1024, parallel=1) as other,
          pytest.raises(grpc.RpcError) as info):
        other.stub().ImportSlot(iter([slot_state_pb2.SlotStateChunk(data=snapshot[1])]),
                                timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "made by another model" in (info.value.details() or "")


def test_another_format_version_or_a_corrupt_snapshot_is_refused(
        second: ServiceProcess, snapshot: tuple[Any, bytes]) -> None:
    data = snapshot[1]
    cases = {
        data[:8] + struct.pack("<I", 7) + data[12:]: "format version 7",
        data[:-1]: "length does not match",
        data[:-1] + bytes([data[-1] ^ 1]): "checksum",
    }
    for bad, message in cases.items():
        err = import_refused(second.stub(), bad)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in (err.details() or "")


def test_a_snapshot_larger_than_a_slot_can_hold_is_refused(second: ServiceProcess) -> None:
    mib = b"\0" * (1 << 20)
    with pytest.raises(grpc.RpcError) as info:
        import_(second.stub(), 0, [mib] * 40)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "larger than a slot here can hold" in (info.value.details() or "")


def test_declared_sizes_are_checked(second: ServiceProcess,
                                    snapshot: tuple[Any, bytes]) -> None:
    data = snapshot[1]
    for total, n_tokens, message in ((len(data) + 1, None, "declared"),
                                     (len(data), 3, "declares 3 tokens")):
        first = slot_state_pb2.SlotStateChunk(id_slot=0, data=data, total_bytes=total)
        if n_tokens is not None:
            first.n_tokens = n_tokens
        with pytest.raises(grpc.RpcError) as info:
            second.stub().ImportSlot(iter([first]), metadata=AUTH, timeout=60)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in (info.value.details() or "")


def test_bad_slot_ids_and_an_empty_stream(second: ServiceProcess) -> None:
    stub = second.stub()
    for call in (lambda: export(stub, 2), lambda: import_(stub, -1, [b"x"]),
                 lambda: import_(stub, 0, [])):
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_both_rpcs_need_the_api_key(second: ServiceProcess) -> None:
    stub = second.stub()
    with pytest.raises(grpc.RpcError) as info:
        list(stub.ExportSlot(slot_state_pb2.ExportSlotRequest(id_slot=0), timeout=30))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.RpcError) as info:
        stub.ImportSlot(iter([slot_state_pb2.SlotStateChunk(data=b"x")]), timeout=30)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
