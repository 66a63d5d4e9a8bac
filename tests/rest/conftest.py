"""Fixtures of the REST bridge tests: a real `llama-grpc-server` (gRPC and the REST bridge
child process) on free ports, one open and one with an API key, shared by the session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from rest_harness import API_KEY, RestServer, started


@pytest.fixture(scope="session")
def rest_server(tiny_bpe_path: Path) -> Iterator[RestServer]:
    server = started(RestServer(tiny_bpe_path))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def keyed_server(tiny_bpe_path: Path) -> Iterator[RestServer]:
    server = started(RestServer(tiny_bpe_path, "--api-key", API_KEY, ctx=2048, parallel=2))
    yield server
    server.stop()


@pytest.fixture()
def http(rest_server: RestServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=rest_server.url, timeout=60.0) as client:
        yield client
