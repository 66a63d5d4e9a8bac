"""Speculative decoding through the service (issue 20): `-md` over real gRPC, the request's
speculative.* fields, timings' draft_n/draft_n_accepted, /slots' `speculative`, the metrics'
acceptance counters, and the start-up refusal of a draft whose vocabulary differs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from llama.v1 import server_pb2

from native.testmodels import ensure_model
from tests.grpc_harness import GREEDY, ServiceProcess, complete, running_service

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def speculative(tiny_bpe_path: Path) -> Iterator[ServiceProcess]:
    draft = ensure_model("tiny-bpe")  # the draft that agrees: drafts are kept
    with running_service(tiny_bpe_path, "-md", str(draft), "--spec-draft-n-max", "4", "--metrics",
                         ctx=1024, parallel=2) as svc:
        yield svc


def test_drafts_show_in_timings_slots_and_metrics(speculative: ServiceProcess,
                                                  grpc_service: ServiceProcess) -> None:
    stub = speculative.stub()
    fields = {**GREEDY, "prompt": "Speculate about this", "n_predict": 24, "cache_prompt": False}
    result = complete(stub, **fields, **{"speculative.n_max": 6})
    assert result.code == grpc.StatusCode.OK, result.details
    t = result.final.timings
    assert t.HasField("draft_n") and t.draft_n > 0 and 0 < t.draft_n_accepted <= t.draft_n
    # llama-server's default kind first ("none"), then the one in use
    assert result.final.generation_settings.speculative_types == "none,draft-simple"
    # The same request on a server without a draft: the same tokens, and no draft timings.
    plain = complete(grpc_service.stub(), **fields)
    assert plain.tokens == result.tokens and not plain.final.timings.HasField("draft_n")
    slots = stub.ListSlots(server_pb2.ListSlotsRequest()).slots
    assert slots and all(s.speculative for s in slots)
    assert not any(s.speculative for s in grpc_service.stub().ListSlots(
        server_pb2.ListSlotsRequest()).slots)
    m = stub.GetMetrics(server_pb2.GetMetricsRequest())
    assert m.spec_decode_num_draft_tokens_total >= t.draft_n
    assert 0 < m.spec_decode_num_accepted_tokens_total <= m.spec_decode_num_draft_tokens_total
    assert m.spec_decode_num_drafts_total > 0
    per_pos = list(m.spec_decode_num_accepted_tokens_per_pos)
    assert per_pos and sum(per_pos) == m.spec_decode_num_accepted_tokens_total
    assert per_pos == sorted(per_pos, reverse=True)  # position i is kept only after i - 1
    text = m.prometheus.data.decode()
    assert (f"llamacpp:spec_decode_num_draft_tokens_total "
            f"{m.spec_decode_num_draft_tokens_total}") in text
    assert (f'llamacpp:spec_decode_num_accepted_tokens_per_pos_total{{position="0"}} '
            f"{per_pos[0]}") in text


def test_speculation_off_per_request(speculative: ServiceProcess) -> None:
    result = complete(speculative.stub(), **GREEDY, prompt="no drafts", n_predict=8,
                      **{"speculative.n_max": 0})
    assert result.code == grpc.StatusCode.OK and not result.final.timings.HasField("draft_n")


@pytest.mark.parametrize(("field", "value"), [
    ("speculative.n_max", -1), ("speculative.n_min", -1), ("speculative.p_min", 2.0)])
def test_bad_draft_settings_are_refused(speculative: ServiceProcess, field: str,
                                        value: float) -> None:
    result = complete(speculative.stub(), prompt="x", n_predict=2, **{field: value})
    assert result.code == grpc.StatusCode.INVALID_ARGUMENT
    assert field in result.details


def test_a_draft_with_another_vocabulary_is_refused_at_start_up(tiny_bpe_path: Path) -> None:
    svc = ServiceProcess.start(tiny_bpe_path, "-md", str(ensure_model("tiny-spm")), ctx=512,
                               parallel=1, wait=False)
    try:
        assert svc.proc.wait(timeout=120) != 0
        log = svc.log()
    finally:
        svc.stop()
    assert "cannot draft for the target model" in log
    assert "vocabularies must match" in log
