"""The reasoning tests' server: the real service on the random tiny-bpe model with the DeepSeek
R1 Distill template, whose prompt opens the thinking block itself (`<think>`), so that the whole
answer is reasoning until something closes the block; and a gRPC stub on it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
from llama.v1 import service_pb2_grpc
from rest.rest_harness import RestServer

from native.testmodels.sources import llama_cpp_models_dir


def r1_template() -> Path:
    return llama_cpp_models_dir() / "templates" / "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"


@contextmanager
def r1_server(model: Path, *flags: str) -> Iterator[RestServer]:
    """`model` with the R1 template, -c 4096 -np 2 and `flags`, once ready; stopped after."""
    srv = RestServer(model, "--chat-template-file", str(r1_template()), *flags, ctx=4096,
                     parallel=2)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@contextmanager
def llama_stub(server: RestServer) -> Iterator[Any]:
    """A LlamaServer stub on the server's gRPC port; its channel closed after."""
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield service_pb2_grpc.LlamaServerStub(channel)
