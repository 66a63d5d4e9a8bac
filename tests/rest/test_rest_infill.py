"""POST /infill through the REST bridge as editor plugins (llama.vim, llama.vscode) call it: the
warm-up request, response_fields with slashed names, llama-server's checks of input_extra, and
a model without FIM tokens."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from rest_harness import RestServer

from native.testmodels import ensure_model

pytestmark = pytest.mark.slow
GREEDY = {"temperature": 0.0}


@pytest.fixture(scope="module")
def fim_http() -> Iterator[httpx.Client]:
    server = RestServer(ensure_model("tiny-fim-repo"), "-b", "256", "-ub", "256", ctx=2048,
                        parallel=2)
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=60.0) as client:
            yield client
    finally:
        server.stop()


def test_an_editor_plugins_request(fim_http: httpx.Client) -> None:
    body = {"input_prefix": "def f():\n", "input_suffix": "\n", "prompt": "    ",
            "input_extra": [{"filename": "a.py", "text": "A = 1\n"}, {"text": "B = 2\n"}],
            "n_predict": 3, "samplers": ["top_k", "infill"], "cache_prompt": True,
            "response_fields": ["content", "timings/prompt_n", "tokens_cached", "stop"],
            **GREEDY}
    first = fim_http.post("/infill", json=body)
    assert first.status_code == 200, first.text
    out = first.json()
    assert set(out) == {"content", "timings/prompt_n", "tokens_cached", "stop"}
    assert out["stop"] is True and out["timings/prompt_n"] > 10
    again = fim_http.post("/infill", json=body).json()
    assert again["tokens_cached"] >= out["timings/prompt_n"] - 1  # cache_prompt reused it
    assert again["content"] == out["content"]


def test_the_warm_up_request_answers_an_empty_object(fim_http: httpx.Client) -> None:
    r = fim_http.post("/infill", json={"input_prefix": "", "input_suffix": "", "n_predict": 0,
                                       "response_fields": [""]})
    assert r.status_code == 200 and r.json() == {}


def test_a_streamed_infill_ends_with_the_final_object(fim_http: httpx.Client) -> None:
    with fim_http.stream("POST", "/infill", json={"input_prefix": "x = ", "input_suffix": "",
                                                  "n_predict": 3, "stream": True}) as r:
        assert r.status_code == 200
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert events and '"stop":true' in events[-1].replace(" ", "")


@pytest.mark.parametrize(("extra", "message"), [
    ({}, 'extra_context chunk must contain a "text" field with a string value'),
    ({"text": 1}, 'extra_context chunk must contain a "text" field with a string value'),
    ({"text": "x", "filename": 2}, 'extra_context chunk\'s "filename" field must be a string'),
    ("x", 'extra_context chunk must contain a "text" field with a string value'),
])
def test_bad_input_extra_is_400(fim_http: httpx.Client, extra: object, message: str) -> None:
    r = fim_http.post("/infill", json={"input_prefix": "a", "input_suffix": "b",
                                       "input_extra": [extra]})
    assert r.status_code == 400
    assert r.json()["error"] == {"code": 400, "message": message, "type": "invalid_request_error"}


def test_input_extra_must_be_an_array(fim_http: httpx.Client) -> None:
    r = fim_http.post("/infill", json={"input_prefix": "a", "input_suffix": "b",
                                       "input_extra": {"text": "x"}})
    assert r.status_code == 400 and "must be an array" in r.json()["error"]["message"]


def test_a_model_without_fim_tokens_is_501(http: httpx.Client) -> None:
    r = http.post("/infill", json={"input_prefix": "a", "input_suffix": "b"})
    assert r.status_code == 501
    error = r.json()["error"]
    assert error["type"] == "not_supported_error"
    assert error["message"].startswith("Infill is not supported by this model:")
