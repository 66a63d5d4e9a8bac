"""The server's event loop choice (service/event_loop.py): uvloop's unless
LLAMA_GRPC_EVENT_LOOP=asyncio; another value is a start-up error, not a silent default."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest
import uvloop

from service import event_loop


async def _loop_type() -> type:
    return type(asyncio.get_running_loop())


@pytest.mark.parametrize("value", [None, "", "uvloop", " uvloop "])
def test_uvloop_is_the_default(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv(event_loop.ENV, raising=False)
    else:
        monkeypatch.setenv(event_loop.ENV, value)
    assert event_loop.chosen() == "uvloop"
    assert issubclass(event_loop.run(_loop_type()), uvloop.Loop)


def test_asyncio_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(event_loop.ENV, "asyncio")
    loop_type = event_loop.run(_loop_type())
    assert not issubclass(loop_type, uvloop.Loop)
    assert issubclass(loop_type, asyncio.BaseEventLoop)


def test_another_value_stops_the_server_with_the_choices() -> None:
    out = subprocess.run([sys.executable, "-m", "service.cli", "-m", "model.gguf"],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, event_loop.ENV: "trio"})
    assert out.returncode == 2
    assert "LLAMA_GRPC_EVENT_LOOP='trio': expected one of uvloop, asyncio" in out.stderr
