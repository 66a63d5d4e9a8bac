"""Media in requests, end to end (issue 23, "Bad input"): every bad input of the issue's list,
and valid media sent to a model without a projector, at the three front doors of one real
service: gRPC, the REST bridge, and Envoy (grpc_json_transcoder over LlamaServerHttp). Each is
a 400 / INVALID_ARGUMENT with its reason; the two REST doors answer the same bytes; the
server is unaffected (a plain request still completes, its peak memory barely moves)."""

from __future__ import annotations

import base64
import io
import json
import struct
import wave
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
import pytest
from envoy_harness import EnvoyProcess
from google.protobuf import json_format
from llama.v1 import chat_pb2, common_pb2, completion_pb2, embedding_pb2, service_pb2_grpc
from PIL import Image
from rest.rest_harness import RestServer
from test_two_front_doors import Answer

pytestmark = pytest.mark.slow
TIMEOUT = httpx.Timeout(60.0, connect=5.0)


def _png(width: int = 6, height: int = 4) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(out, format="PNG")
    return out.getvalue()


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                             0, 0, 0)) \
        + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def _wav() -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\x00\x00" * 1600)
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


PNG, WAV = b64(_png()), b64(_wav())
HUGE = b64(_png_header(20_000, 20_000))
NO_PROJECTOR = "Multimodal data provided, but model does not support multimodal requests."
NO_IMAGE = "image input is not supported - hint: if this is unexpected, you may need to " \
    "provide the mmproj"


def chat(*parts: Any, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": list(parts)}], "max_tokens": 2, **extra}


def image_part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


TEXT = {"type": "text", "text": "What is this?"}


@dataclass(frozen=True)
class Case:
    path: str
    body: dict[str, Any]
    reason: str  # a part of the error message
    grpc: bool = True  # a gRPC client can send it (bytes fields carry no base64)


CASES: dict[str, Case] = {
    # valid media, text-only model: llama-server's own words
    "chat image": Case("/v1/chat/completions", chat(TEXT, image_part(f"data:image/png;base64,"
                                                                     f"{PNG}")), NO_IMAGE),
    "chat image streamed": Case("/v1/chat/completions",
                                chat(image_part(f"data:image/png;base64,{PNG}"), stream=True),
                                NO_IMAGE),
    "chat bare base64 image": Case("/chat/completions", chat(image_part(PNG)), NO_IMAGE),
    "chat audio": Case("/v1/chat/completions", chat(
        TEXT, {"type": "input_audio", "input_audio": {"data": WAV, "format": "wav"}}),
        "audio input is not supported - hint"),
    "chat video": Case("/v1/chat/completions", chat(
        {"type": "input_video", "input_video": {"data": WAV}}), "video input is not supported"),
    "apply-template image": Case("/apply-template", chat(image_part(
        f"data:image/png;base64,{PNG}")), NO_IMAGE),
    "completion image_data": Case("/completion", {"prompt": "[img-7] Describe.", "image_data": [
        {"data": PNG, "id": 7}], "n_predict": 2}, NO_PROJECTOR),
    "completion multimodal_data": Case("/completion", {"prompt": {
        "prompt_string": "<__media__> Describe.", "multimodal_data": [PNG]}, "n_predict": 2},
        NO_PROJECTOR),
    "openai completion multimodal_data": Case("/v1/completions", {"prompt": [
        "plain", {"prompt_string": "<__media__>", "multimodal_data": [WAV]}], "max_tokens": 2},
        NO_PROJECTOR),
    "infill image_data": Case("/infill", {"input_prefix": "[img-1]", "input_suffix": "",
                                          "image_data": [{"data": PNG, "id": 1}]},
                              NO_PROJECTOR),
    # bad input
    "remote url": Case("/v1/chat/completions", chat(image_part("https://example.com/cat.png")),
                       "image_url: remote media URLs are not fetched"),
    "corrupt base64": Case("/v1/chat/completions", chat(image_part(
        "data:image/png;base64,iVBO*Rw0KGgo=")), "image_url: invalid base64"),
    "truncated base64": Case("/v1/chat/completions", chat(image_part(
        f"data:image/png;base64,{PNG[:len(PNG) // 4 * 4 - 3]}")), "image_url: invalid base64: "
        "the data is "
        "truncated"),
    "truncated image": Case("/v1/chat/completions", chat(image_part(
        f"data:image/png;base64,{b64(_png(60, 60)[:-40])}")), "truncated image/png image"),
    "data uri without base64": Case("/v1/chat/completions", chat(image_part(
        "data:image/png,iVBORw0KGgo=")), "uri must be base64 encoded"),
    "unknown mime type": Case("/v1/chat/completions", chat(image_part(
        f"data:image/tiff;base64,{PNG}")), "unsupported MIME type image/tiff"),
    "not an image": Case("/v1/chat/completions", chat(image_part(
        f"data:image/png;base64,{b64(b'just some text, no image at all')}")),
        "not a supported image or audio file"),
    "audio in an image part": Case("/v1/chat/completions", chat(image_part(
        f"data:image/png;base64,{WAV}")), "declared image/png but the bytes are audio/wav"),
    "huge image": Case("/v1/chat/completions", chat(image_part(
        f"data:image/png;base64,{HUGE}")), "image too large: 20000 x 20000 pixels"),
    "more placeholders than images": Case("/completion", {
        "prompt": "[img-1] and [img-2]", "image_data": [{"data": PNG, "id": 1}]},
        "[img-2] names no image of image_data"),
    "more images than placeholders": Case("/completion", {
        "prompt": "[img-1] only", "image_data": [{"data": PNG, "id": 1}, {"data": PNG, "id": 2}]},
        "image_data id 2 is not referenced as [img-2]"),
    "more markers than media": Case("/completion", {"prompt": {
        "prompt_string": "<__media__> <__media__>", "multimodal_data": [PNG]}},
        "2 <__media__> markers for 1 media items"),
    "more media than markers": Case("/completion", {"prompt": {
        "prompt_string": "no marker", "multimodal_data": [PNG, PNG]}},
        "0 <__media__> markers for 2 media items"),
    "multimodal_data corrupt base64": Case("/completion", {"prompt": {
        "prompt_string": "<__media__>", "multimodal_data": ["not base64 at all!"]}},
        "prompt.multimodal_data[0]: invalid base64"),
    "too many items": Case("/completion", {"prompt": {
        "prompt_string": "<__media__>" * 33, "multimodal_data": [PNG] * 33}},
        "too many media items: at most 32"),
    "image_data corrupt base64": Case("/completion", {
        "prompt": "[img-1]", "image_data": [{"data": "iVBO*Rw0", "id": 1}]},
        "image_data[0].data: invalid base64", grpc=False),
}

EMBED_CASES: dict[str, Case] = {
    "embedding image_data": Case("/embedding", {"content": "[img-3] a cat", "image_data": [
        {"data": PNG, "id": 3}]}, NO_PROJECTOR),
    "openai embedding multimodal_data": Case("/v1/embeddings", {"input": [
        {"prompt_string": "<__media__>", "multimodal_data": [PNG]}]}, NO_PROJECTOR),
    "embedding not an image": Case("/embeddings", {"content": "[img-3]", "image_data": [
        {"data": b64(b"%PDF-1.7 not an image"), "id": 3}]}, "not a supported image"),
    "embedding unreferenced image": Case("/embeddings", {"content": "no placeholder",
                                                         "image_data": [{"data": PNG, "id": 3}]},
                                         "image_data id 3 is not referenced"),
}


@dataclass
class Doors:
    server: RestServer
    envoy: str

    def rest(self, case: Case) -> tuple[Answer, dict[str, Any]]:
        """The bridge's answer, checked equal to Envoy's, and its JSON."""
        answers = []
        for base in (self.server.url, self.envoy):
            with httpx.Client(base_url=base, timeout=TIMEOUT) as client:
                answers.append(Answer.of(client.post(case.path, json=case.body)))
        assert answers[0] == answers[1], f"bridge {answers[0]}\n  envoy {answers[1]}"
        return answers[0], json.loads(answers[0].body)

    def grpc_error(self, case: Case) -> grpc.RpcError:
        rpc, message = _GRPC[case.path]
        request = json_format.ParseDict(case.body, message(), ignore_unknown_fields=True)
        with grpc.insecure_channel(self.server.grpc_target) as channel:
            method = getattr(service_pb2_grpc.LlamaServerStub(channel), rpc)
            with pytest.raises(grpc.RpcError) as caught:
                reply = method(request, timeout=60)
                if not hasattr(reply, "ListFields"):  # a stream: read it
                    list(reply)
        return caught.value


_GRPC = {"/completion": ("Completion", completion_pb2.CompletionRequest),
         "/infill": ("Infill", completion_pb2.CompletionRequest),
         "/v1/completions": ("OpenAICompletion", completion_pb2.CompletionRequest),
         "/v1/chat/completions": ("ChatCompletion", chat_pb2.ChatCompletionRequest),
         "/chat/completions": ("ChatCompletion", chat_pb2.ChatCompletionRequest),
         "/apply-template": ("ApplyTemplate", chat_pb2.ChatCompletionRequest),
         "/embedding": ("Embed", embedding_pb2.EmbedRequest),
         "/embeddings": ("Embed", embedding_pb2.EmbedRequest),
         "/v1/embeddings": ("OpenAIEmbed", embedding_pb2.EmbedRequest)}


def _doors(server: RestServer, tmp: Path) -> Iterator[Doors]:
    try:
        server.wait_ready()
        with EnvoyProcess.start([server.grpc_target], tmp) as envoy:
            yield Doors(server, envoy.base_url)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def doors(tiny_bpe_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Doors]:
    yield from _doors(RestServer(tiny_bpe_path, "--no-webui", ctx=1024, parallel=1),
                      tmp_path_factory.mktemp("envoy-media"))


@pytest.fixture(scope="module")
def embed_doors(minilm_path: Path, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[Doors]:
    yield from _doors(RestServer(minilm_path, "--embeddings", "--no-webui", ctx=512,
                                 parallel=1), tmp_path_factory.mktemp("envoy-media-embed"))


def _check(doors: Doors, case: Case) -> None:
    answer, body = doors.rest(case)
    assert answer.status == 400, answer
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["code"] == 400
    assert case.reason in body["error"]["message"], body
    if case.grpc:
        error = doors.grpc_error(case)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
        assert case.reason in (error.details() or ""), error.details()


@pytest.mark.parametrize("name", list(CASES))
def test_media_requests_are_refused_with_the_reason(doors: Doors, name: str) -> None:
    _check(doors, CASES[name])


@pytest.mark.parametrize("name", list(EMBED_CASES))
def test_embedding_media_are_refused_with_the_reason(embed_doors: Doors, name: str) -> None:
    _check(embed_doors, EMBED_CASES[name])


def _grpc_typed(doors: Doors, rpc: str, request: Any) -> grpc.RpcError:
    with grpc.insecure_channel(doors.server.grpc_target) as channel, \
            pytest.raises(grpc.RpcError) as caught:
        reply = getattr(service_pb2_grpc.LlamaServerStub(channel), rpc)(request, timeout=60)
        if not hasattr(reply, "ListFields"):
            list(reply)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return caught.value


def test_typed_media_over_grpc(doors: Doors) -> None:
    png = base64.b64decode(PNG)
    media = common_pb2.Media(data=png, mime_type="image/png", kind=common_pb2.MEDIA_KIND_IMAGE)
    prompt = common_pb2.TypedPrompt(pieces=[common_pb2.PromptPiece(text="<__media__> hi")],
                                    media=[media])
    request = completion_pb2.CompletionRequest(
        typed_prompt=common_pb2.PromptList(prompts=[prompt]))
    assert _grpc_typed(doors, "Completion", request).details() == NO_PROJECTOR
    part = chat_pb2.ContentPart(type="image_url", media=media)
    message = chat_pb2.ChatMessage(role="user", content_parts=chat_pb2.ContentPartList(
        parts=[chat_pb2.ContentPart(type="text", text="hi"), part]))
    chat_request = chat_pb2.ChatCompletionRequest(messages=[message])
    assert _grpc_typed(doors, "ChatCompletion", chat_request).details() == NO_IMAGE
    wrong = common_pb2.Media(data=png, kind=common_pb2.MEDIA_KIND_AUDIO)
    prompt = common_pb2.TypedPrompt(pieces=[common_pb2.PromptPiece(text="<__media__>")],
                                    media=[wrong])
    request = completion_pb2.CompletionRequest(
        typed_prompt=common_pb2.PromptList(prompts=[prompt]))
    assert "expected audio but the bytes are image/png" in \
        (_grpc_typed(doors, "Completion", request).details() or "")
    image = common_pb2.ImageData(data=png, id=1, mime_type="image/gif")
    request = completion_pb2.CompletionRequest(prompt=_value("[img-1]"), image_data=[image])
    assert _grpc_typed(doors, "Completion", request).details() == NO_PROJECTOR


def _value(text: str) -> Any:
    from google.protobuf import struct_pb2
    return struct_pb2.Value(string_value=text)


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_nothing_else_is_affected(doors: Doors) -> None:
    """After the bad requests (the 20,000 x 20,000 image among them, a 1.2 GB bitmap if it
    were decoded) the server's peak memory has not grown by the bitmap, and it completes."""
    before = _peak_rss_kib(doors.server.proc.pid)
    for _ in range(3):
        _check(doors, CASES["huge image"])
    assert _peak_rss_kib(doors.server.proc.pid) - before < 64 * 1024
    with httpx.Client(base_url=doors.server.url, timeout=TIMEOUT) as client:
        r = client.post("/completion", json={"prompt": "Hello", "n_predict": 2})
    assert r.status_code == 200 and r.json()["tokens_predicted"] == 2


def test_props_report_no_modality(doors: Doors) -> None:
    with httpx.Client(base_url=doors.server.url, timeout=TIMEOUT) as client:
        props = client.get("/props").json()
        info = client.get("/server-info").json()
    assert props["modalities"] == {"vision": False, "audio": False, "video": False}
    assert props["media_marker"] == "<__media__>"
    assert info["modalities"] in ({}, {"vision": False, "audio": False, "video": False})


@pytest.mark.parametrize("door", ["bridge", "envoy"])
def test_openai_sdk_sees_a_bad_request(doors: Doors, door: str) -> None:
    """The OpenAI client's image message, as it sends it, is its BadRequestError with the
    reason."""
    base = doors.server.url if door == "bridge" else doors.envoy
    client = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="image input is not supported"):
        client.chat.completions.create(model="any", max_tokens=2, messages=[{
            "role": "user", "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}",
                                                    "detail": "low"}}]}])
