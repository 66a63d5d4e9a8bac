"""`python -m rest_bridge.overhead` (the benchmark hook that times the bridge against direct
gRPC) runs against a real server with both of its HTTP clients. No timing is asserted: only
that every request was timed and each side saw the generated text."""

from __future__ import annotations

import asyncio

import pytest
from rest_harness import API_KEY, RestServer

from rest_bridge.overhead import measure_many


@pytest.mark.parametrize("client", ["raw", "httpx"])
def test_both_paths_timed(keyed_server: RestServer, client: str) -> None:
    [report] = asyncio.run(measure_many(keyed_server.grpc_target, [keyed_server.url],
                                        {"n_predict": 6}, runs=3, api_key=API_KEY, warmup=1,
                                        client=client))
    assert len(report.grpc) == len(report.rest) == 3
    for t in (*report.grpc, *report.rest):
        assert t.pieces >= 1  # text came (a piece per message or event that carried some)
        assert 0 < t.ttft_s <= t.total_s
    assert "added: ttft" in report.summary()
