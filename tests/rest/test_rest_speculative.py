"""Speculative decoding over HTTP (issue 20): `-md` and `--spec-type ngram-simple` through the
REST bridge: `speculative.n_max` and friends in llama-server's dotted keys, `timings.draft_n`
and `draft_n_accepted`, `/slots`' speculative, and a bad draft setting as a 400."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from rest_harness import RestServer, started

from native.testmodels import ensure_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def spec_http(tiny_bpe_path: Path) -> Iterator[httpx.Client]:
    server = started(RestServer(tiny_bpe_path, "-md", str(ensure_model("tiny-bpe")),
                                "--spec-type", "ngram-simple,draft-simple", ctx=1024,
                                parallel=2))
    try:
        with httpx.Client(base_url=server.url, timeout=120.0) as client:
            yield client
    finally:
        server.stop()


def test_completion_reports_its_drafts(spec_http: httpx.Client) -> None:
    body = {"prompt": "Once upon a time", "n_predict": 16, "temperature": 0,
            "speculative.n_max": 4, "speculative.n_min": 1, "speculative.p_min": 0.0}
    r = spec_http.post("/completion", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    t = out["timings"]
    assert t["draft_n"] > 0 and 0 <= t["draft_n_accepted"] <= t["draft_n"]
    assert out["generation_settings"]["speculative.types"] == "none,ngram-simple,draft-simple"
    off = spec_http.post("/completion", json={**body, "speculative.n_max": 0}).json()
    assert off["content"] == out["content"]  # the same text with speculation off
    assert "draft_n" not in off["timings"]
    slots = spec_http.get("/slots").json()
    assert slots and all(s["speculative"] is True for s in slots)


def test_a_bad_draft_setting_is_a_400(spec_http: httpx.Client) -> None:
    r = spec_http.post("/completion", json={"prompt": "x", "speculative.p_min": 3})
    assert r.status_code == 400
    assert "speculative.p_min" in r.json()["error"]["message"]
