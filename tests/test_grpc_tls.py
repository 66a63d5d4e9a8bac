"""--ssl-key-file / --ssl-cert-file serve gRPC over TLS (a self-signed certificate made here)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import grpc
import pytest
from llama.v1 import server_pb2, service_pb2_grpc

from service.config import load_config
from service.server import start_server


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key, cert = tmp / "key.pem", tmp / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True)
    return key, cert


@pytest.mark.slow
def test_tls_serves_and_plaintext_is_refused(tiny_bpe_path: Path, tmp_path: Path) -> None:
    key, cert = _self_signed(tmp_path)
    config = load_config(["-m", str(tiny_bpe_path), "-c", "512", "-np", "1", "--no-warmup",
                          "--ssl-key-file", str(key), "--ssl-cert-file", str(cert)], env={})

    async def scenario() -> None:
        handle = await start_server(config, host="127.0.0.1", port=0)
        try:
            await asyncio.wait_for(handle.loaded.wait(), 60)
            assert handle.load_error is None
            creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
            async with grpc.aio.secure_channel(f"localhost:{handle.port}", creds) as ch:
                models = await service_pb2_grpc.LlamaServerStub(ch).ListModels(
                    server_pb2.ListModelsRequest(), timeout=10)
                assert models.data[0].object == "model"
            async with grpc.aio.insecure_channel(f"127.0.0.1:{handle.port}") as ch:
                with pytest.raises(grpc.aio.AioRpcError):
                    await service_pb2_grpc.LlamaServerStub(ch).ListModels(
                        server_pb2.ListModelsRequest(), timeout=5)
        finally:
            await handle.stop(0)

    asyncio.run(scenario())
