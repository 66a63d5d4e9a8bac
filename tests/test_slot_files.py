"""Slot save / restore / erase (SlotAction, POST /slots/{id}?action=...) on the real service
with --slot-save-path, over gRPC and through the REST bridge: the documented responses, file
name safety (separators, '..', absolute paths, symlinks), atomic writes, files of another model
or corrupt ones refused with the slot untouched, a busy slot refused, and a restored cache
reused by the next request (timings.cache_n)."""

from __future__ import annotations

import json
import os
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from cancel_harness import ENDLESS, StreamReader, wait_processing
from grpc_harness import (
    GREEDY,
    ServiceProcess,
    complete,
    completion_request,
    free_port,
    service_env,
)
from llama.v1 import server_pb2

PROMPT = "Once upon a time, in a land far away, there lived a"
N_PREDICT = 8


@pytest.fixture(scope="module")
def save_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("slots")


@pytest.fixture(scope="module")
def server(tiny_bpe_path: Path, save_dir: Path) -> Iterator[tuple[ServiceProcess, str]]:
    """Three slots of 512 (--context-shift: ENDLESS runs until cancelled), with its bridge."""
    port = free_port()
    svc = ServiceProcess.launch(
        ["-m", str(tiny_bpe_path), "-c", "1536", "-np", "3", "--port", str(port),
         "--context-shift", "--slot-save-path", str(save_dir)], free_port(), service_env())
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(svc, url)
        yield svc, url
    finally:
        svc.stop()


def _wait_http(svc: ServiceProcess, url: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert svc.proc.poll() is None, svc.log()
        try:
            if httpx.get(url + "/health", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(svc.log()[-4000:])


@pytest.fixture()
def stub(server: tuple[ServiceProcess, str]) -> Any:
    return server[0].stub()


def action(stub: Any, id_slot: int, what: str, filename: str | None = None) -> Any:
    req = server_pb2.SlotActionRequest(id_slot=id_slot, action=what)
    if filename is not None:
        req.options.filename = filename
    return stub.SlotAction(req, timeout=30)


def refused(stub: Any, id_slot: int, what: str, filename: str | None = None) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        action(stub, id_slot, what, filename)
    return info.value


def run(stub: Any, id_slot: int, prompt: str = PROMPT) -> Any:
    r = complete(stub, prompt=prompt, n_predict=N_PREDICT, id_slot=id_slot, **GREEDY)
    assert r.code == grpc.StatusCode.OK, r.details
    return r


def test_save_erase_restore_and_the_restored_cache_is_reused(stub: Any, save_dir: Path) -> None:
    first = run(stub, 0)
    n_cached = first.final.tokens_evaluated + N_PREDICT - 1  # the last token is never decoded
    saved = action(stub, 0, "save", "story.bin")
    assert (saved.id_slot, saved.filename, saved.n_saved) == (0, "story.bin", n_cached)
    assert saved.n_written == (save_dir / "story.bin").stat().st_size
    assert saved.timings.HasField("save_ms") and saved.timings.save_ms >= 0
    assert [p.name for p in save_dir.iterdir() if p.name.startswith(".")] == []  # no temp left

    assert action(stub, 0, "erase").n_erased == n_cached
    assert run(stub, 0).final.timings.cache_n == 0  # erased: evaluated again
    action(stub, 0, "erase")

    restored = action(stub, 1, "restore", "story.bin")
    assert (restored.id_slot, restored.filename, restored.n_restored) == (1, "story.bin",
                                                                          n_cached)
    assert restored.n_read == saved.n_written and restored.timings.HasField("restore_ms")
    again = run(stub, 1)
    assert again.final.timings.cache_n == first.final.tokens_evaluated - 1
    assert again.tokens == first.tokens  # the restored cells are the same computation


@pytest.mark.parametrize("name", [
    "../escape.bin", "sub/dir.bin", "/tmp/abs.bin", "..", ".", "", "a\\b", "nul\x00.bin",
    "tab\t.bin", " lead.bin", "x" * 256,
])
def test_a_name_that_is_not_a_plain_file_name_is_refused(stub: Any, save_dir: Path,
                                                        name: str) -> None:
    before = sorted(p.name for p in save_dir.parent.rglob("*"))
    for what in ("save", "restore"):
        err = refused(stub, 0, what, name)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Invalid filename" in (err.details() or "")
    assert sorted(p.name for p in save_dir.parent.rglob("*")) == before


def test_symlinks_never_lead_out_of_the_directory(stub: Any, save_dir: Path,
                                                 tmp_path: Path) -> None:
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"not yours")
    (save_dir / "link.bin").symlink_to(outside)
    err = refused(stub, 0, "restore", "link.bin")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "symbolic link" in err.details()
    run(stub, 0)
    action(stub, 0, "save", "link.bin")  # the rename replaces the link, never writes through it
    assert outside.read_bytes() == b"not yours"
    assert not (save_dir / "link.bin").is_symlink()


def _valid_file(stub: Any, save_dir: Path, name: str) -> bytes:
    run(stub, 2)
    action(stub, 2, "save", name)
    return (save_dir / name).read_bytes()


def _with_header(data: bytes, **changes: Any) -> bytes:
    magic, version, n = struct.unpack_from("<8sII", data)
    header = json.loads(data[16:16 + n])
    header.update(changes)
    raw = json.dumps(header).encode()
    return struct.pack("<8sII", magic, version, len(raw)) + raw + data[16 + n:]


def _corruptions(data: bytes) -> dict[str, tuple[bytes, str]]:
    flipped = bytearray(data)
    flipped[-10] ^= 0xFF
    wrong_version = data[:8] + struct.pack("<I", 2) + data[12:]
    return {
        "other-model": (_with_header(data, model="0" * 64), "made by another model"),
        "truncated": (data[:-100], "length does not match"),
        "flipped": (bytes(flipped), "checksum"),
        "version": (wrong_version, "format version 2"),
        "not-ours": (b"GGUF" + os.urandom(200), "bad magic"),
        "tiny": (b"LG", "too short"),
        "too-many-tokens": (_with_header(data, n_tokens=100000), "tokens"),
        "garbage-header": (data[:16] + b"{" * struct.unpack_from("<I", data, 12)[0]
                           + data[16 + struct.unpack_from("<I", data, 12)[0]:],
                           "unreadable header"),
    }


def test_a_corrupt_file_or_another_models_is_refused_and_the_slot_kept(
        stub: Any, save_dir: Path) -> None:
    data = _valid_file(stub, save_dir, "good.bin")
    kept = action(stub, 2, "save", "kept.bin").n_saved
    for name, (content, message) in _corruptions(data).items():
        (save_dir / name).write_bytes(content)
        err = refused(stub, 2, "restore", name)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert message in (err.details() or ""), (name, err.details())
        assert action(stub, 2, "save", "kept.bin").n_saved == kept  # untouched
    assert action(stub, 2, "restore", "good.bin").n_restored == kept


def test_missing_file_bad_slot_and_bad_action(stub: Any) -> None:
    err = refused(stub, 0, "restore", "never-saved.bin")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "no slot file" in err.details()
    for id_slot in (3, -1):
        err = refused(stub, id_slot, "erase")
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Invalid slot ID" in err.details()
    for what in ("", "delete", "SAVE"):
        err = refused(stub, 0, what, "x.bin")
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "Invalid action" in err.details()


def test_an_action_on_a_busy_slot_is_refused(
        stub: Any, save_dir: Path, open_stream: Callable[[Any], StreamReader]) -> None:
    reader = open_stream(stub.Completion(completion_request(prompt=PROMPT, id_slot=1,
                                                            **ENDLESS)))
    reader.first_content()
    wait_processing(stub, 1)
    for what, name in (("save", "busy.bin"), ("erase", None), ("restore", "story.bin")):
        err = refused(stub, 1, what, name)
        assert err.code() == grpc.StatusCode.UNAVAILABLE and "processing" in err.details()
    assert not (save_dir / "busy.bin").exists()
    reader.cancel()


def test_without_slot_save_path_every_action_is_unimplemented(grpc_stub: Any) -> None:
    for what in ("save", "restore", "erase"):
        err = refused(grpc_stub, 0, what, "x.bin")
        assert err.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "--slot-save-path" in err.details()


def test_through_the_bridge_the_responses_are_llama_servers(server: Any) -> None:
    url = server[1]
    with httpx.Client(base_url=url, timeout=60) as http:
        r = http.post("/completion", json={"prompt": PROMPT, "n_predict": 4, "id_slot": 2,
                                           "temperature": 0})
        assert r.status_code == 200
        saved = http.post("/slots/2?action=save", json={"filename": "rest.bin"})
        assert saved.status_code == 200, saved.text
        body = saved.json()
        assert set(body) == {"id_slot", "filename", "n_saved", "n_written", "timings"}
        assert isinstance(body["n_written"], int) and set(body["timings"]) == {"save_ms"}
        restored = http.post("/slots/0?action=restore", json={"filename": "rest.bin"}).json()
        assert restored["n_restored"] == body["n_saved"]
        assert isinstance(restored["n_read"], int) and set(restored["timings"]) == {"restore_ms"}
        assert http.post("/slots/0?action=erase").json() == {"id_slot": 0,
                                                              "n_erased": body["n_saved"]}
        bad = http.post("/slots/0?action=save", json={"filename": "../x"})
        assert bad.status_code == 400 and "Invalid filename" in bad.json()["error"]["message"]
        bad = http.post("/slots/9?action=erase")
        assert bad.status_code == 400 and "Invalid slot ID" in bad.json()["error"]["message"]
