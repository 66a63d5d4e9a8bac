"""Slot restores into one KV cache shared by every slot (--kv-unified): a restore never takes
cells that running requests have reserved (refused UNAVAILABLE while they hold them), and
drops idle slots' cached prompts, least recently used first, to make room."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cancel_harness import ENDLESS, StreamReader, get_load, slot, wait_free, wait_processing
from grpc_harness import GREEDY, complete, completion_request, running_service
from llama.v1 import server_pb2

PROMPT = list(range(1000, 1300))  # 300 tokens: two of them do not fit 512 cells


@pytest.fixture(scope="module")
def stub(tiny_bpe_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    save_dir = tmp_path_factory.mktemp("unified-slots")
    with running_service(tiny_bpe_path, "--kv-unified", "--context-shift", "--slot-save-path",
                         str(save_dir), ctx=512, parallel=2) as svc:
        yield svc.stub()


def _action(stub: Any, id_slot: int, what: str, filename: str = "") -> Any:
    req = server_pb2.SlotActionRequest(id_slot=id_slot, action=what)
    if filename:
        req.options.filename = filename
    return stub.SlotAction(req, timeout=30)


def test_a_restore_makes_room_but_never_takes_reserved_cells(
        stub: Any, open_stream: Callable[[Any], StreamReader]) -> None:
    r = complete(stub, prompt=PROMPT, n_predict=1, id_slot=0, **GREEDY)
    assert r.code == grpc.StatusCode.OK, r.details
    assert _action(stub, 0, "save", "long.bin").n_saved == len(PROMPT)

    # An unlimited request reserves all 512 cells: no restore fits beside it.
    _action(stub, 0, "erase")
    reader = open_stream(stub.Completion(completion_request(prompt="Hi", id_slot=0,
                                                            **ENDLESS)))
    reader.first_content()
    wait_processing(stub, 1)
    with pytest.raises(grpc.RpcError) as info:
        _action(stub, 1, "restore", "long.bin")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "not enough free KV cells" in (info.value.details() or "")
    assert slot(get_load(stub), 1).n_cells == 0
    reader.cancel()
    wait_free(stub, 0)

    # Idle slot 0 caches 300 tokens; restoring 300 into slot 1 drops slot 0's cache.
    assert complete(stub, prompt=PROMPT, n_predict=1, id_slot=0, **GREEDY).code == \
        grpc.StatusCode.OK
    assert slot(get_load(stub), 0).n_cells == len(PROMPT)
    assert _action(stub, 1, "restore", "long.bin").n_restored == len(PROMPT)
    load = get_load(stub)
    assert (slot(load, 0).n_cells, slot(load, 1).n_cells) == (0, len(PROMPT))
    again = complete(stub, prompt=[*PROMPT, 5], n_predict=1, id_slot=1, **GREEDY)
    assert again.final.timings.cache_n == len(PROMPT)
