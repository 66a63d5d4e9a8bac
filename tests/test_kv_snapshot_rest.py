"""KV snapshots through the REST bridge (ours): GET /slots/{id}/export answers the snapshot's
bytes, POST /slots/import?id_slot=N takes them; a cache moves between two server processes of
the same model over plain HTTP, and refusals are llama-server-shaped JSON errors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from grpc_harness import ServiceProcess, free_port, service_env

API_KEY = "rest-snapshot-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
PROMPT = "A long conversation, parked and brought back:"


def _start(model: Path) -> tuple[ServiceProcess, str]:
    port = free_port()
    svc = ServiceProcess.launch(["-m", str(model), "-c", "1024", "-np", "2", "--port", str(port),
                                 "--api-key", API_KEY], free_port(), service_env())
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return svc, url
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or svc.proc.poll() is not None:
            svc.stop()
            raise TimeoutError("the REST bridge did not come up")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def servers(tiny_bpe_path: Path) -> Iterator[tuple[str, str]]:
    a, url_a = _start(tiny_bpe_path)
    try:
        b, url_b = _start(tiny_bpe_path)
        try:
            yield url_a, url_b
        finally:
            b.stop()
    finally:
        a.stop()


def _complete(url: str, id_slot: int) -> dict[str, Any]:
    r = httpx.post(url + "/completion", headers=AUTH, timeout=60, json={
        "prompt": PROMPT, "n_predict": 4, "temperature": 0, "id_slot": id_slot})
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_a_cache_moves_over_http(servers: tuple[str, str]) -> None:
    url_a, url_b = servers
    before = _complete(url_a, 1)
    snap = httpx.get(url_a + "/slots/1/export", headers=AUTH, timeout=60)
    assert snap.status_code == 200 and snap.headers["content-type"] == "application/octet-stream"
    assert snap.content[:8] == b"LGKVSLOT"
    assert int(snap.headers["content-length"]) == len(snap.content)
    imported = httpx.post(url_b + "/slots/import?id_slot=0", headers=AUTH, content=snap.content,
                          timeout=60)
    assert imported.status_code == 200, imported.text
    body = imported.json()
    assert body["id_slot"] == 0 and body["n_read"] == len(snap.content)
    assert isinstance(body["n_read"], int) and body["n_restored"] > 0
    after = _complete(url_b, 0)
    timings = after["timings"]
    assert isinstance(timings, dict) and timings["cache_n"] == before["tokens_evaluated"] - 1
    assert after["content"] == before["content"]


def test_refusals_are_json_errors(servers: tuple[str, str]) -> None:
    url = servers[0]
    bad = httpx.post(url + "/slots/import?id_slot=0", headers=AUTH,
                     content=b"not a snapshot at all, no", timeout=30)
    assert bad.status_code == 400 and "bad magic" in bad.json()["error"]["message"]
    bad = httpx.get(url + "/slots/7/export", headers=AUTH, timeout=30)
    assert bad.status_code == 400 and "Invalid slot ID" in bad.json()["error"]["message"]
    bad = httpx.post(url + "/slots/import?id_slot=x", headers=AUTH, content=b"", timeout=30)
    assert bad.status_code == 400
    assert httpx.get(url + "/slots/0/export", timeout=30).status_code == 401
