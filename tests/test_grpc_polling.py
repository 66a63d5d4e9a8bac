"""Our server processes choose grpc's own socket polling (rest_bridge.grpc_polling) before
grpc loads; a GRPC_EXPERIMENTS the user set wins. Each case runs in a fresh interpreter, as
the setting only counts when grpc first loads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rest_bridge.grpc_polling import ENV, INLINE_POLLING

REPO = Path(__file__).resolve().parent.parent

# Prints GRPC_EXPERIMENTS as it is at the moment something first imports grpc.
_SPY = """
import os, sys
class Spy:
    def find_spec(self, name, path=None, target=None):
        if name == "grpc":
            print("at grpc import:", os.environ.get("GRPC_EXPERIMENTS", "<unset>"), flush=True)
            sys.meta_path.remove(self)
        return None
sys.meta_path.insert(0, Spy())
"""


def _run(code: str, env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if env_value is not None:
        env[ENV] = env_value
    done = subprocess.run([sys.executable, "-c", _SPY + code], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


@pytest.mark.parametrize("entry", ["service.cli", "rest_bridge.cli"])
def test_entry_points_set_polling_before_grpc_loads(entry: str) -> None:
    out = _run(f"import {entry}", None)
    assert out.splitlines()[0] == f"at grpc import: {INLINE_POLLING}"


@pytest.mark.parametrize("entry", ["service.cli", "rest_bridge.cli"])
def test_users_setting_wins(entry: str) -> None:
    out = _run(f"import {entry}", "event_engine_client")
    assert out.splitlines()[0] == "at grpc import: event_engine_client"


def test_nothing_changes_once_grpc_is_loaded() -> None:
    out = _run("import grpc, os\nimport rest_bridge.grpc_polling\n"
               "print('after:', os.environ.get('GRPC_EXPERIMENTS', '<unset>'))", None)
    assert out.splitlines() == ["at grpc import: <unset>", "after: <unset>"]
