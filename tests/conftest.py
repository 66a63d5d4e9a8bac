"""Shared fixtures: generated models (cached outside the tree) loaded once per session."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cancel_harness import StreamReader, stream_readers
from grammar_harness import GrammarRunner
from grpc_harness import ServiceProcess, running_service

import native
from native.testmodels import ensure_model


@pytest.fixture(scope="session")
def tiny_bpe_path() -> Path:
    return ensure_model("tiny-bpe")


@pytest.fixture(scope="session")
def tiny_spm_path() -> Path:
    return ensure_model("tiny-spm")


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    return ensure_model("minilm")


@pytest.fixture(scope="module")
def runner(tiny_bpe_path: Path) -> Iterator[GrammarRunner]:
    """A GrammarRunner (tests/grammar_harness.py) on tiny-bpe, one per test module."""
    model = native.Model(tiny_bpe_path)
    r = GrammarRunner(model)
    yield r
    r.close()
    model.close()


@pytest.fixture(scope="session")
def grpc_service(tiny_bpe_path: Path) -> Iterator[ServiceProcess]:
    """The real gRPC service (subprocess) on tiny-bpe: -c 2048 -np 4, i.e. 4 slots of 512."""
    with running_service(tiny_bpe_path) as svc:
        yield svc


@pytest.fixture(scope="session")
def one_slot_stub(tiny_bpe_path: Path) -> Iterator[Any]:
    """A stub on a service with one slot (-c 1024 -np 1 --context-shift), where admission
    order and waiting are visible; tests leave it idle."""
    with running_service(tiny_bpe_path, "--context-shift", ctx=1024, parallel=1) as svc:
        yield svc.stub()


@pytest.fixture(scope="session")
def grpc_stub(grpc_service: ServiceProcess) -> Any:
    """A llama.v1.LlamaServer stub on `grpc_service`."""
    return grpc_service.stub()


@pytest.fixture()
def open_stream() -> Iterator[Callable[[Any], StreamReader]]:
    """`open_stream(call)` reads a server-streaming call on a thread (cancel_harness); calls
    still running when the test ends are cancelled."""
    with stream_readers() as open_reader:
        yield open_reader
