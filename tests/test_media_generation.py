"""Media through the engine, end to end (issue 23): tiny-bpe with the random LLaVA projector
tiny-vl-mmproj (--mmproj), over real gRPC, the REST bridge and Envoy. A chat with an image part
generates at every door; the same image again reuses the prompt cache past the image, another
image only up to it; /completion's multimodal_data and image_data forms, /v1/completions, and
/embedding with an image (pooling last); /props reports vision; bad inputs are still 400s with
their reason. (A text-only model's refusal: tests/test_media_requests.py.)"""

from __future__ import annotations

import base64
import io
import json
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from envoy_harness import EnvoyProcess
from llama.v1 import chat_pb2, common_pb2, service_pb2_grpc
from PIL import Image
from rest.rest_harness import RestServer

from native.testmodels import ensure_model

pytestmark = pytest.mark.slow
TIMEOUT = httpx.Timeout(120.0, connect=5.0)


def _png(color: tuple[int, int, int], size: tuple[int, int] = (32, 24)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def _wav() -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x00" * 1600)
    return out.getvalue()


GREEN, RED = _png((10, 200, 30)), _png((200, 10, 30))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def image_part(data: bytes) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64(data)}"}}


def chat(image: bytes, text: str = "What is this?", **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": text},
                                                      image_part(image)]}],
            "max_tokens": 3, "temperature": 0, **extra}


@dataclass
class Doors:
    server: RestServer
    envoy: str

    def post(self, door: str, path: str, body: dict[str, Any]) -> httpx.Response:
        base = self.server.url if door == "bridge" else self.envoy
        with httpx.Client(base_url=base, timeout=TIMEOUT) as client:
            return client.post(path, json=body)


def _mmproj_flags() -> tuple[str, ...]:
    return ("--mmproj", str(ensure_model("tiny-vl-mmproj")), "--no-mmproj-offload")


@pytest.fixture(scope="module")
def doors(tiny_bpe_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Doors]:
    server = RestServer(tiny_bpe_path, "--no-webui", *_mmproj_flags(), ctx=1024, parallel=1)
    try:
        server.wait_ready()
        with EnvoyProcess.start([server.grpc_target], tmp_path_factory.mktemp("envoy-mm")) as e:
            yield Doors(server, e.base_url)
    finally:
        server.stop()


@pytest.mark.parametrize("door", ["bridge", "envoy"])
def test_a_chat_with_an_image_generates(doors: Doors, door: str) -> None:
    r = doors.post(door, "/v1/chat/completions", chat(GREEN))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["usage"]["completion_tokens"] == 3
    # 16 image embeddings plus the rendered text: more than the text alone makes
    text_only = doors.post(door, "/apply-template", chat(GREEN)).json()["prompt"]
    assert "<__media__>" in text_only
    assert body["usage"]["prompt_tokens"] > 16


def test_a_chat_with_an_image_over_grpc(doors: Doors) -> None:
    media = common_pb2.Media(data=GREEN, mime_type="image/png",
                             kind=common_pb2.MEDIA_KIND_IMAGE)
    message = chat_pb2.ChatMessage(role="user", content_parts=chat_pb2.ContentPartList(parts=[
        chat_pb2.ContentPart(type="text", text="What is this?"),
        chat_pb2.ContentPart(type="image_url", media=media)]))
    request = chat_pb2.ChatCompletionRequest(messages=[message], max_tokens=3)
    with grpc.insecure_channel(doors.server.grpc_target) as channel:
        replies = list(service_pb2_grpc.LlamaServerStub(channel).ChatCompletion(request,
                                                                                timeout=120))
    assert replies and replies[-1].usage.completion_tokens == 3
    assert replies[-1].usage.prompt_tokens > 16


def _cached(doors: Doors, body: dict[str, Any]) -> tuple[int, str]:
    r = doors.post("bridge", "/v1/chat/completions", body)
    assert r.status_code == 200, r.text
    j = r.json()
    return j["usage"]["prompt_tokens_details"]["cached_tokens"], \
        j["choices"][0]["message"]["content"]


def test_the_same_image_reuses_the_cache_a_different_one_does_not(doors: Doors) -> None:
    n_prompt = doors.post("bridge", "/v1/chat/completions", chat(GREEN)).json()["usage"][
        "prompt_tokens"]
    before_image = doors.post("bridge", "/tokenize", {"content": doors.post(
        "bridge", "/apply-template", chat(GREEN)).json()["prompt"].split("<__media__>")[0],
        "add_special": True}).json()["tokens"]
    same, text_same = _cached(doors, chat(GREEN))
    assert same == n_prompt - 1  # all but the last token, which is decoded for its logits
    other, _ = _cached(doors, chat(RED))
    assert other == len(before_image)  # up to the image, which differs
    again, text_again = _cached(doors, chat(GREEN))
    assert again == len(before_image)  # RED's cells replaced GREEN's
    assert text_again == text_same  # decoded afresh or reused: the same greedy answer


def test_completion_multimodal_data_and_image_data(doors: Doors) -> None:
    forms: list[dict[str, Any]] = [
        {"prompt": {"prompt_string": "Look <__media__> here", "multimodal_data": [b64(GREEN)]}},
        {"prompt": "Look [img-4] here", "image_data": [{"data": b64(GREEN), "id": 4}]}]
    answers = []
    for form in forms:
        for door in ("bridge", "envoy"):
            r = doors.post(door, "/completion", {**form, "n_predict": 3, "temperature": 0})
            assert r.status_code == 200, r.text
            answers.append((r.json()["content"], r.json()["tokens_evaluated"]))
    assert len(set(answers)) == 1  # the same prompt, however it came
    assert answers[0][1] > 16
    r = doors.post("bridge", "/v1/completions", {"prompt": [
        "plain", {"prompt_string": "a <__media__> b", "multimodal_data": [b64(RED)]}],
        "max_tokens": 2})
    assert r.status_code == 200 and len(r.json()["choices"]) == 2


def test_props_report_vision(doors: Doors) -> None:
    with httpx.Client(base_url=doors.server.url, timeout=TIMEOUT) as client:
        props = client.get("/props").json()
        info = client.get("/server-info").json()
    assert props["modalities"] == {"vision": True, "audio": False, "video": False}
    assert info["modalities"]["vision"] is True


@pytest.mark.parametrize(("path", "body", "reason"), [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO*Rw0KGgo="}}]}]},
     "image_url: invalid base64"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [image_part(
        b"just some text, no image at all")]}]}, "not a supported image or audio file"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": b64(_wav()), "format": "wav"}}]}]},
     "audio input is not supported"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "see [img-1]"}],
                              "image_data": [{"data": b64(GREEN), "id": 1}]},
     "image_data in a chat request is not supported"),
    ("/completion", {"prompt": "[img-1] and [img-2]", "image_data": [
        {"data": b64(GREEN), "id": 1}]}, "[img-2] names no image of image_data"),
])
def test_bad_input_is_still_a_400_with_its_reason(doors: Doors, path: str,
                                                    body: dict[str, Any], reason: str) -> None:
    for door in ("bridge", "envoy"):
        r = doors.post(door, path, body)
        assert r.status_code in (400, 501), (door, r.text)
        assert reason in json.loads(r.text)["error"]["message"], (door, r.text)
    r = doors.post("bridge", "/completion", {"prompt": "Hello", "n_predict": 2})
    assert r.status_code == 200 and r.json()["tokens_predicted"] == 2


@pytest.fixture(scope="module")
def embed_server(tiny_bpe_path: Path) -> Iterator[RestServer]:
    server = RestServer(tiny_bpe_path, "--no-webui", "--embeddings", "--pooling", "last",
                        *_mmproj_flags(), ctx=1024, parallel=1)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_embedding_with_an_image(embed_server: RestServer) -> None:
    with httpx.Client(base_url=embed_server.url, timeout=TIMEOUT) as client:
        def embed(image: bytes) -> list[float]:
            r = client.post("/embedding", json={"content": "[img-3] a cat", "image_data": [
                {"data": b64(image), "id": 3}]})
            assert r.status_code == 200, r.text
            return list(r.json()[0]["embedding"][0])
        green, red, green_again = embed(GREEN), embed(RED), embed(GREEN)
        r = client.post("/v1/embeddings", json={"input": [
            {"prompt_string": "<__media__> hi", "multimodal_data": [b64(GREEN)]}, "hi"]})
    assert green == green_again and green != red
    assert r.status_code == 200 and len(r.json()["data"]) == 2
    assert r.json()["usage"]["prompt_tokens"] > 16


def test_a_stream_with_an_image(doors: Doors) -> None:
    r = doors.post("envoy", "/v1/chat/completions", chat(RED, stream=True))
    assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
    assert r.text.count("data: ") >= 3


def test_choices_share_the_image_cells(tiny_bpe_path: Path) -> None:
    """n choices copy the first choice's prompt cells, the image's among them: greedy, all
    give the single answer."""
    server = RestServer(tiny_bpe_path, "--no-webui", *_mmproj_flags(), ctx=1024, parallel=3)
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
            one = client.post("/v1/chat/completions", json=chat(RED)).json()
            many = client.post("/v1/chat/completions", json=chat(RED, n=3)).json()
    finally:
        server.stop()
    answer = one["choices"][0]["message"]["content"]
    assert [c["message"]["content"] for c in many["choices"]] == [answer] * 3
