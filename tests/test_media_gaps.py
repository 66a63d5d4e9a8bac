"""Two media gaps closed after the engine work (issue 23), end to end with tiny-bpe and the
random LLaVA projector tiny-vl-mmproj, over real gRPC and the REST bridge: a prompt that ends
with a medium generates (its first token sampled from the medium's last embedding's logits, as
llama-server does), the prompt cache never reuses that medium's last cell (it has no logits:
the medium is decoded again whole), and n choices of such a prompt agree; an embedding input
that ends with an image (pooling last) reads the image's last output. Embeddings with media under
mean and none pooling, as the pinned llama-server: the media decoded apart, the input's last
text run (attending to them) pooled; an input that ends with a medium there is a clear 400."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from llama.v1 import common_pb2, completion_pb2, service_pb2_grpc
from rest.rest_harness import RestServer
from scheduler_harness import fresh, make_scheduler
from test_media_generation import GREEN, RED, TIMEOUT, _mmproj_flags, b64
from test_media_scheduling import _step, _with_media

from service.engine.scheduler import Plan

pytestmark = pytest.mark.slow  # the servers; the scheduler's tests are pure logic

ENDING = "Describe this: <__media__>"


def _post(server: RestServer, path: str, body: dict[str, Any]) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        return client.post(path, json=body)


def test_a_medium_that_ends_the_prompt_is_planned_with_an_output() -> None:
    """Pure logic: the medium ending a prompt carries an output (its last embedding's logits);
    one in the middle does not."""
    sched = make_scheduler(2, n_batch=32)
    ending = _with_media("end", fresh(4), b"img", 6, [])
    middle = _with_media("mid", fresh(4), b"img", 6, fresh(2))
    sched.add(ending)
    sched.add(middle)
    _step(sched)  # the text before each medium
    plan = _step(sched)
    outputs = {w.request.id: w.n_outputs for w in plan.media}
    assert outputs == {"end": 1, "mid": 0}


def test_a_second_choice_decodes_the_ending_medium_itself() -> None:
    """n choices: the copy stops where the ending medium starts (its last cell's logits are
    not copied), so the second choice plans that medium whole, with its output."""
    sched = make_scheduler(2, n_batch=32)
    head = fresh(4)
    first = _with_media("a", head, b"img", 6, [])
    second = _with_media("b", head, b"img", 6, [])
    second.copy_of = first
    sched.add(first)
    sched.add(second)
    plans: list[Plan] = [_step(sched) for _ in range(3)]
    copies = [c for p in plans for c in p.copies]
    assert copies and all(end == len(head) for _, _, end in copies)
    seconds = [w for p in plans for w in p.media if w.request is second]
    assert len(seconds) == 1 and seconds[0].pos == len(head) and seconds[0].n_outputs == 1
    assert not [w for p in plans for w in p.work if w.request is second]


def test_an_unsplittable_input_goes_a_text_run_or_a_medium_at_a_time() -> None:
    """Pure logic, pooling mean/cls/none: the run before a medium goes alone, the medium, then
    the last run whole with an output at each of its tokens; a run the budget would cut waits."""
    sched = make_scheduler(1, n_batch=8)
    r = _with_media("e", fresh(3), b"img", 4, fresh(5))
    r.embedding, r.splittable = True, False
    sched.add(r)
    plans = [_step(sched) for _ in range(3)]
    assert [(len(w.tokens), w.n_outputs) for w in plans[0].work] == [(3, 0)]
    assert [(w.pos, w.n_outputs) for w in plans[1].media] == [(3, 0)] and not plans[1].work
    assert [(w.pos, len(w.tokens), w.n_outputs) for w in plans[2].work] == [(7, 5, 5)]
    cut = make_scheduler(1, n_batch=4)
    long = _with_media("l", fresh(3), b"img", 2, fresh(6))
    long.embedding, long.splittable = True, False
    cut.add(long)
    assert [len(w.tokens) for w in _step(cut).work] == [3]
    _step(cut)  # the medium
    assert not _step(cut).work  # its last run (6) never fits a batch of 4: never split


@pytest.fixture(scope="module")
def server(tiny_bpe_path: Path) -> Iterator[RestServer]:
    srv = RestServer(tiny_bpe_path, "--no-webui", *_mmproj_flags(), ctx=1024, parallel=2)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def _complete(server: RestServer, image: bytes, **extra: Any) -> dict[str, Any]:
    r = _post(server, "/completion", {"prompt": {"prompt_string": ENDING,
                                                 "multimodal_data": [b64(image)]},
                                      "n_predict": 4, "temperature": 0, **extra})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_a_prompt_ending_with_an_image_generates_and_caches_up_to_it(
        server: RestServer) -> None:
    before = _post(server, "/tokenize", {"content": ENDING.split("<__media__>")[0],
                                         "add_special": True}).json()["tokens"]
    first = _complete(server, RED)
    assert first["tokens_predicted"] == 4
    n_prompt = first["tokens_evaluated"]
    assert n_prompt > len(before) + 1  # the image's embeddings end the prompt
    again = _complete(server, RED)
    assert again["content"] == first["content"]  # greedy: the same answer
    assert again["tokens_evaluated"] == n_prompt
    # all up to the image: its last cell has no logits, so the image is decoded again whole
    assert again["timings"]["cache_n"] == len(before)
    assert again["timings"]["prompt_n"] == n_prompt - len(before)
    other = _complete(server, GREEN)
    assert other["tokens_predicted"] == 4 and other["timings"]["cache_n"] == len(before)


def test_a_prompt_ending_with_an_image_over_grpc(server: RestServer) -> None:
    over_rest = _complete(server, GREEN)
    prompt = common_pb2.TypedPrompt(pieces=[common_pb2.PromptPiece(text=ENDING)],
                                    multimodal_data=[GREEN])
    request = completion_pb2.CompletionRequest(
        typed_prompt=common_pb2.PromptList(prompts=[prompt]), n_predict=4, temperature=0.0)
    with grpc.insecure_channel(server.grpc_target) as channel:
        chunks = list(service_pb2_grpc.LlamaServerStub(channel).Completion(request, timeout=120))
    assert chunks[-1].stop and chunks[-1].tokens_predicted == 4
    assert "".join(c.content for c in chunks) == over_rest["content"]
    assert chunks[-1].tokens_evaluated == over_rest["tokens_evaluated"]


def test_choices_of_a_prompt_ending_with_an_image_agree(server: RestServer) -> None:
    """The second choice copies the cells before the image and decodes the image itself (its
    last embedding's logits are its own)."""
    one = _complete(server, RED)["content"]
    r = _post(server, "/v1/completions", {
        "prompt": {"prompt_string": ENDING, "multimodal_data": [b64(RED)]},
        "max_tokens": 4, "temperature": 0, "n": 2})
    assert r.status_code == 200, r.text
    assert [c["text"] for c in r.json()["choices"]] == [one, one]


def test_n_predict_zero_ends_at_the_prompt(server: RestServer) -> None:
    body = _complete(server, GREEN, n_predict=0)
    assert body["tokens_predicted"] == 0 and body["content"] == ""


@pytest.fixture(scope="module")
def last_server(tiny_bpe_path: Path) -> Iterator[RestServer]:
    srv = RestServer(tiny_bpe_path, "--no-webui", "--embeddings", "--pooling", "last",
                     *_mmproj_flags(), ctx=1024, parallel=1)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def test_an_embedding_ending_with_an_image(last_server: RestServer) -> None:
    def embed(image: bytes) -> list[float]:
        r = _post(last_server, "/embedding", {"content": "a photo of [img-3]",
                                              "image_data": [{"data": b64(image), "id": 3}]})
        assert r.status_code == 200, r.text
        return list(r.json()[0]["embedding"][0])

    green, red, green_again = embed(GREEN), embed(RED), embed(GREEN)
    assert green == green_again and green != red
    assert any(v != 0.0 for v in green)


def _pooled_server(tiny_bpe_path: Path, pooling: str) -> Iterator[RestServer]:
    srv = RestServer(tiny_bpe_path, "--no-webui", "--embeddings", "--pooling", pooling,
                     *_mmproj_flags(), ctx=1024, parallel=1)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def mean_server(tiny_bpe_path: Path) -> Iterator[RestServer]:
    yield from _pooled_server(tiny_bpe_path, "mean")


def _embed(server: RestServer, text: str, image: bytes) -> list[list[float]]:
    r = _post(server, "/embedding", {"content": text, "image_data": [{"data": b64(image),
                                                                      "id": 3}]})
    assert r.status_code == 200, r.text
    return [list(v) for v in r.json()[0]["embedding"]]


def test_an_embedding_with_an_image_under_mean_pooling(mean_server: RestServer) -> None:
    green, red = (_embed(mean_server, "[img-3] a cat", image) for image in (GREEN, RED))
    assert green == _embed(mean_server, "[img-3] a cat", GREEN)  # deterministic
    assert len(green) == 1 and green != red  # the text attends to the image
    plain = _post(mean_server, "/embedding", {"content": "a cat"}).json()[0]["embedding"]
    assert green[0] != plain[0]
    # a medium in the middle: the runs before it are decoded, the last one pooled
    both = _embed(mean_server, "two [img-3] cats", GREEN)
    assert len(both) == 1 and both != green
    r = _post(mean_server, "/v1/embeddings", {"input": [
        {"prompt_string": "<__media__> a cat", "multimodal_data": [b64(GREEN)]}, "a cat"]})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data[0]["embedding"] == pytest.approx(green[0], abs=1e-6)
    assert data[1]["embedding"] == pytest.approx(plain[0], abs=1e-6)


def test_an_embedding_ending_with_an_image_under_mean_pooling_is_a_400(
        mean_server: RestServer) -> None:
    cases: list[tuple[str, dict[str, Any]]] = [
        ("/embedding", {"content": "a cat [img-3]", "image_data": [{"data": b64(GREEN),
                                                                    "id": 3}]}),
        ("/v1/embeddings", {"input": [{"prompt_string": "a cat <__media__>",
                                       "multimodal_data": [b64(GREEN)]}]})]
    for path, body in cases:
        r = _post(mean_server, path, body)
        assert r.status_code == 400, r.text
        assert "ends with a medium" in r.json()["error"]["message"]
    assert _post(mean_server, "/embedding", {"content": "still fine"}).status_code == 200


@pytest.fixture(scope="module")
def none_server(tiny_bpe_path: Path) -> Iterator[RestServer]:
    yield from _pooled_server(tiny_bpe_path, "none")


def test_pooling_none_gives_the_last_text_runs_vectors(none_server: RestServer) -> None:
    tail = _post(none_server, "/tokenize", {"content": " a cat", "add_special": False}
                 ).json()["tokens"]
    vectors = _embed(none_server, "[img-3] a cat", RED)
    assert len(vectors) == len(tail)
    assert vectors == _embed(none_server, "[img-3] a cat", RED)
    assert vectors != _embed(none_server, "[img-3] a cat", GREEN)


def test_cls_pooling_with_an_image(tiny_bpe_path: Path) -> None:
    """cls: the first token of the last text run (which attends to the image)."""
    for srv in _pooled_server(tiny_bpe_path, "cls"):
        green = _embed(srv, "[img-3] a cat", GREEN)
        assert green == _embed(srv, "[img-3] a cat", GREEN)
        assert len(green) == 1 and green != _embed(srv, "[img-3] a cat", RED)
