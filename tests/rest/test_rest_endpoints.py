"""Raw HTTP against every endpoint the service offers: field names and JSON types as the spec
shows them, and SSE framing byte for byte (`data: <json>\\n\\n`, `data: [DONE]` only on the
OpenAI routes)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from rest_harness import sse_events

pytestmark = pytest.mark.slow

NATIVE_FINAL = {"index": int, "content": str, "tokens": list, "id_slot": int, "stop": bool,
                "model": str, "tokens_predicted": int, "tokens_evaluated": int,
                "generation_settings": dict, "prompt": str, "has_new_line": bool,
                "truncated": bool, "stop_type": str, "stopping_word": str,
                "tokens_cached": int, "timings": dict}
NATIVE_PARTIAL = {"index": int, "content": str, "tokens": list, "stop": bool, "id_slot": int,
                  "tokens_predicted": int, "tokens_evaluated": int}
TIMINGS = {"prompt_n": int, "prompt_ms": float, "prompt_per_token_ms": float,
           "prompt_per_second": float, "predicted_n": int, "predicted_ms": float,
           "predicted_per_token_ms": float, "predicted_per_second": float}
GREEDY = {"temperature": 0, "seed": 42}


def assert_fields(obj: dict[str, Any], spec: dict[str, type]) -> None:
    for name, typ in spec.items():
        assert name in obj, f"missing {name!r} in {sorted(obj)}"
        value = obj[name]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
            if typ is float else isinstance(value, typ)
        assert ok, f"{name!r} is {type(value).__name__}, want {typ.__name__}"


def post_json(http: httpx.Client, path: str, body: dict[str, Any]) -> Any:
    r = http.post(path, json=body)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    return r.json()


def stream_events(http: httpx.Client, path: str, body: dict[str, Any]) -> list[str]:
    r = http.post(path, json={**body, "stream": True})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    return sse_events(r.text)


# -- /completion ------------------------------------------------------------------------------
def test_completion_fields(http: httpx.Client) -> None:
    out = post_json(http, "/completion", {"prompt": "Hello", "n_predict": 6, **GREEDY})
    assert_fields(out, NATIVE_FINAL)
    assert_fields(out["timings"], TIMINGS)
    assert out["stop"] is True and out["stop_type"] in ("eos", "limit", "word")
    assert out["tokens"] == []  # only with return_tokens
    assert "completion_probabilities" not in out
    assert out["tokens_predicted"] <= 6
    settings = out["generation_settings"]
    assert settings["n_predict"] == 6 and settings["temperature"] == 0
    # The pinned llama-server's keys: draft settings only as their types, no n_ctx or model.
    assert settings["speculative.types"] == "none" and settings["samplers"][0] == "penalties"
    assert not {"speculative.n_max", "n_ctx", "model"} & settings.keys()
    assert "id" not in out


def test_completion_reads_values_as_llama_server(http: httpx.Client) -> None:
    """A samplers string is llama.cpp's one-letter codes, an unknown name is left out, an
    integer given a fraction is truncated, and the generation's id is a header."""
    r = http.post("/completion", json={"prompt": "Hello", "n_predict": 2, "samplers": "kxt?",
                                       "top_k": 3.7, **GREEDY})
    assert r.status_code == 200, r.text
    settings = r.json()["generation_settings"]
    assert settings["samplers"] == ["top_k", "xtc", "temperature"] and settings["top_k"] == 3
    assert r.headers["x-request-id"].startswith("cmpl-")
    out = post_json(http, "/completion", {"prompt": "Hello", "n_predict": 2,
                                          "samplers": ["top-k", "warp_drive"], **GREEDY})
    assert out["generation_settings"]["samplers"] == ["top_k"]
    # An empty list (or string) is a chain of no sampler, as llama-server's; absent, the default.
    empties: tuple[Any, ...] = ([], "")
    for empty in empties:
        out = post_json(http, "/completion", {"prompt": "Hello", "n_predict": 1,
                                              "samplers": empty, **GREEDY})
        assert out["generation_settings"]["samplers"] == []


def test_a_json_schema_keeps_its_key_order(http: httpx.Client) -> None:
    """The schema's properties in the request's order (not a Struct's sorted order): the
    grammar writes them so, as llama-server's."""
    schema = {"type": "object", "properties": {"zeta": {"type": "integer"},
                                               "alpha": {"type": "integer"}},
              "required": ["zeta", "alpha"]}
    out = post_json(http, "/completion", {"prompt": "x", "n_predict": 1, "json_schema": schema,
                                          **GREEDY})
    root = next(r for r in out["generation_settings"]["grammar"].splitlines()
                if r.startswith("root ::="))
    assert root.index("zeta-kv") < root.index("alpha-kv"), root


def test_completion_alias_and_return_tokens(http: httpx.Client) -> None:
    body = {"prompt": "Hello", "n_predict": 5, "return_tokens": True, **GREEDY}
    a = post_json(http, "/completion", body)
    b = post_json(http, "/completions", body)
    assert a["content"] == b["content"]
    assert len(a["tokens"]) == a["tokens_predicted"] > 0
    detok = post_json(http, "/detokenize", {"tokens": a["tokens"]})
    assert detok["content"] == a["content"]


def test_completion_stream_framing(http: httpx.Client) -> None:
    body = {"prompt": "Hello", "n_predict": 6, **GREEDY}
    events = stream_events(http, "/completion", body)
    assert "[DONE]" not in events  # native streams end without it, as llama-server's
    objs = [json.loads(e) for e in events]
    for o in objs[:-1]:
        assert_fields(o, NATIVE_PARTIAL)
        assert o["stop"] is False and o["tokens"]
    assert_fields(objs[-1], NATIVE_FINAL)
    assert objs[-1]["stop"] is True
    whole = post_json(http, "/completion", body)
    assert "".join(o["content"] for o in objs) == whole["content"]


def test_completion_token_and_mixed_prompts(http: httpx.Client) -> None:
    ids = post_json(http, "/tokenize", {"content": "Hello world", "add_special": True})["tokens"]
    by_text = post_json(http, "/completion", {"prompt": "Hello world", "n_predict": 4, **GREEDY})
    by_ids = post_json(http, "/completion", {"prompt": ids, "n_predict": 4, **GREEDY})
    mixed = post_json(http, "/completion", {"prompt": [ids[0], "Hello world"], "n_predict": 4,
                                            **GREEDY})
    # A BOS is added only when the prompt starts with text, so all three are the same tokens.
    assert by_ids["content"] == by_text["content"] == mixed["content"]
    assert by_ids["tokens_evaluated"] == by_text["tokens_evaluated"] == len(ids)


def test_several_prompts_give_an_array(http: httpx.Client) -> None:
    prompts = ["Hello", "The sky is", "Once"]
    out = post_json(http, "/completion", {"prompt": prompts, "n_predict": 4, **GREEDY})
    assert isinstance(out, list) and [o["index"] for o in out] == [0, 1, 2]
    for i, p in enumerate(prompts):
        single = post_json(http, "/completion", {"prompt": p, "n_predict": 4, **GREEDY})
        assert out[i]["content"] == single["content"]
        assert_fields(out[i], NATIVE_FINAL)


def test_several_prompts_stream_carry_index(http: httpx.Client) -> None:
    objs = [json.loads(e) for e in stream_events(
        http, "/completion", {"prompt": ["Hello", "Once"], "n_predict": 3, **GREEDY})]
    assert {o["index"] for o in objs} == {0, 1}
    assert sum(o["stop"] for o in objs) == 2


def test_completion_probabilities(http: httpx.Client) -> None:
    out = post_json(http, "/completion", {"prompt": "Hello", "n_predict": 3, "n_probs": 2,
                                          **GREEDY})
    probs = out["completion_probabilities"]
    assert len(probs) == out["tokens_predicted"]
    for p in probs:
        assert_fields(p, {"id": int, "token": str, "bytes": list, "logprob": float,
                          "top_logprobs": list})
        assert 0 < len(p["top_logprobs"]) <= 2
        assert_fields(p["top_logprobs"][0], {"id": int, "token": str, "bytes": list,
                                             "logprob": float})
    post = post_json(http, "/completion", {"prompt": "Hello", "n_predict": 2, "n_probs": 2,
                                           "post_sampling_probs": True, **GREEDY})
    for p in post["completion_probabilities"]:
        assert "prob" in p and "top_probs" in p and "logprob" not in p
        assert 0.0 <= p["prob"] <= 1.0


def test_response_fields(http: httpx.Client) -> None:
    out = post_json(http, "/completion", {
        "prompt": "Hello", "n_predict": 2, **GREEDY,
        "response_fields": ["content", "generation_settings/n_predict", "no_such_field"]})
    assert set(out) == {"content", "generation_settings/n_predict"}
    assert out["generation_settings/n_predict"] == 2


def test_stop_strings_and_logit_bias_shapes(http: httpx.Client) -> None:
    for bias in ([[15043, 1.0], ["Hello", -0.5]], {"15043": 1.0, "Hello": False}):
        out = post_json(http, "/completion", {"prompt": "Hi", "n_predict": 2, "logit_bias": bias,
                                              "stop": ["\n\n"], **GREEDY})
        assert out["stop"] is True


def test_unknown_fields_are_ignored(http: httpx.Client) -> None:
    out = post_json(http, "/completion", {"prompt": "Hi", "n_predict": 1, "no_such_option": 7,
                                          "nested": {"x": [1]}, **GREEDY})
    assert out["stop"] is True


# -- OpenAI routes ----------------------------------------------------------------------------
def test_v1_completions_stream_framing(http: httpx.Client) -> None:
    events = stream_events(http, "/v1/completions", {"prompt": "Hello", "max_tokens": 4,
                                                     **GREEDY})
    assert events[-1] == "[DONE]"
    objs = [json.loads(e) for e in events[:-1]]
    for o in objs:
        assert o["object"] == "text_completion"
        assert_fields(o, {"id": str, "created": int, "model": str, "choices": list})
        choice = o["choices"][0]
        assert_fields(choice, {"text": str, "index": int})
        assert "logprobs" in choice and "finish_reason" in choice
    assert objs[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert_fields(objs[-1]["usage"], {"completion_tokens": int, "prompt_tokens": int,
                                      "total_tokens": int})


def test_chat_stream_framing(http: httpx.Client) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **GREEDY}
    events = stream_events(http, "/v1/chat/completions", body)
    assert events[-1] == "[DONE]"
    objs = [json.loads(e) for e in events[:-1]]
    assert all(o["object"] == "chat.completion.chunk" for o in objs)
    assert objs[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    assert objs[-1]["choices"][0]["delta"] == {}
    assert objs[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    text = "".join(o["choices"][0]["delta"].get("content") or "" for o in objs)
    whole = post_json(http, "/chat/completions", body)
    assert whole["object"] == "chat.completion"
    assert whole["choices"][0]["message"]["content"] == text
    assert_fields(whole["usage"], {"completion_tokens": int, "prompt_tokens": int,
                                   "total_tokens": int})


# -- tokens and templates ---------------------------------------------------------------------
def test_tokenize_detokenize(http: httpx.Client) -> None:
    out = post_json(http, "/tokenize", {"content": "Hello world"})
    assert out["tokens"] and all(isinstance(t, int) for t in out["tokens"])
    with_bos = post_json(http, "/tokenize", {"content": "Hello world", "add_special": True})
    assert len(with_bos["tokens"]) == len(out["tokens"]) + 1
    assert post_json(http, "/detokenize", {"tokens": out["tokens"]}) == {"content": "Hello world"}


def test_tokenize_a_list_content_piecewise(http: httpx.Client) -> None:
    """As llama-server: strings and token ids mixed, BOS only before a first string."""
    def tok(body: dict[str, Any]) -> list[Any]:
        tokens: list[Any] = post_json(http, "/tokenize", body)["tokens"]
        return tokens

    hello, world = tok({"content": "Hello"}), tok({"content": " world"})
    assert tok({"content": ["Hello", 7, 8.9, " world"]}) == [*hello, 7, 8, *world]
    assert tok({"content": ["Hello", " world"], "add_special": True}) == [128000, *hello, *world]
    assert tok({"content": [5, "Hello"], "add_special": True}) == [5, *hello]
    assert tok({"content": [], "add_special": True}) == []
    assert tok({"content": [9906, " world"], "with_pieces": True}) == [
        {"id": 9906, "piece": "Hello"}, {"id": world[0], "piece": " world"}]
    for bad in ([None], ["a", True], [[1]], [2**40]):
        r = http.post("/tokenize", json={"content": bad})
        assert r.status_code == 400 and "content[" in r.json()["error"]["message"], r.text
    r = http.post("/tokenize", json={"content": [10**9], "with_pieces": True})
    assert r.status_code == 400 and "outside the vocabulary" in r.json()["error"]["message"]


def test_tokenize_with_pieces(http: httpx.Client) -> None:
    out = post_json(http, "/tokenize", {"content": "Hello world", "with_pieces": True})
    assert out["tokens"] == [{"id": out["tokens"][0]["id"], "piece": "Hello"},
                             {"id": out["tokens"][1]["id"], "piece": " world"}]


def test_tokenize_pieces_that_are_not_utf8_are_byte_lists(http: httpx.Client) -> None:
    # A rare emoji falls apart into byte tokens; each piece is then a list of byte values, and
    # the pieces' bytes put together are the text's UTF-8.
    text = " 🦙"
    out = post_json(http, "/tokenize", {"content": text, "with_pieces": True})
    pieces = [t["piece"] for t in out["tokens"]]
    assert any(isinstance(p, list) for p in pieces), pieces
    raw = b"".join(bytes(p) if isinstance(p, list) else p.encode() for p in pieces)
    assert raw == text.encode()
    for p in pieces:
        if isinstance(p, list):
            assert all(isinstance(b, int) and 0 <= b < 256 for b in p)


def test_apply_template(http: httpx.Client) -> None:
    out = post_json(http, "/apply-template", {"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi there"}]})
    assert set(out) == {"prompt"}
    assert "hi there" in out["prompt"] and "Be brief." in out["prompt"]
    assert out["prompt"].endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


# -- server -----------------------------------------------------------------------------------
def test_health_props_models(http: httpx.Client) -> None:
    r = http.get("/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    props = http.get("/props").json()
    assert_fields(props, {"default_generation_settings": dict, "total_slots": int,
                          "model_path": str, "chat_template": str, "build_info": str})
    assert props["total_slots"] == 4
    assert "params" in props["default_generation_settings"]
    for path in ("/v1/models", "/models"):
        models = http.get(path).json()
        assert models["object"] == "list" and len(models["data"]) == 1
        model = models["data"][0]
        assert_fields(model, {"id": str, "object": str, "created": int, "owned_by": str,
                              "meta": dict})
        assert_fields(model["meta"], {"vocab_type": int, "n_vocab": int, "n_ctx_train": int,
                                      "n_embd": int, "n_params": int, "size": int})


def test_load_shows_the_engine(http: httpx.Client) -> None:
    """GET /load (ours): the engine's load, always on; after a completion its slot keeps the
    prompt's cells cached and nothing is reserved."""
    r = http.post("/completion", json={"prompt": "Load me", "n_predict": 2})
    assert r.status_code == 200
    load = http.get("/load").json()
    assert_fields(load, {"n_processing": int, "n_waiting": int, "total_slots": int,
                         "idle_slots": int, "kv_cells_total": int, "kv_cells_used": int,
                         "kv_cells_reserved": int, "slots": list})
    assert load["total_slots"] == 4 and len(load["slots"]) == 4
    assert load["kv_cells_reserved"] == 0 and load["kv_cells_used"] > 0
    assert load["kv_cells_used"] == sum(s["n_cells"] for s in load["slots"])
