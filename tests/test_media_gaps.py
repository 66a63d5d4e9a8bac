"""Two media gaps closed after the engine work (issue 23), end to end with tiny-bpe and the
random LLaVA projector tiny-vl-mmproj, over real gRPC and the REST bridge: a prompt that ends
with a medium generates (its first token sampled from the medium's last embedding's logits, as
llama-server does), the prompt cache never reuses that medium's last cell (it has no logits:
the medium is decoded again whole), and n choices of such a prompt agree; an embedding input
that ends with an image (pooling last) reads the image's last output. What stays refused is a
clear 400 (embeddings with media under mean pooling: docs/multimodal.md)."""

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
