"""Audio through the engine, end to end (issue 23): tiny-bpe with the random Qwen2-Audio-style
projector tiny-audio-mmproj (--mmproj), over real gRPC and the REST bridge. A chat with an
`input_audio` part generates; the same audio again reuses the prompt cache past it; /props
reports audio; a cut-off WAV and an image are 400s with their reason. The harness pieces
are tests/test_media_generation.py's.

0.5 s of audio is one 30 s Whisper window: 750 embeddings in the prompt."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from llama.v1 import chat_pb2, common_pb2, service_pb2_grpc
from rest.rest_harness import RestServer
from test_media_generation import GREEN, TIMEOUT, b64, image_part

from native.testmodels import ensure_model
from native.testmodels.catalog import TINY_AUDIO_MMPROJ
from native.testmodels.test_audio import make_wav, truncated_wav

pytestmark = pytest.mark.slow
PER_CHUNK = TINY_AUDIO_MMPROJ.tokens_per_chunk
A440, A880 = make_wav(0.5, 440.0), make_wav(0.5, 880.0)


def audio_part(wav: bytes) -> dict[str, Any]:
    return {"type": "input_audio", "input_audio": {"data": b64(wav), "format": "wav"}}


def chat(wav: bytes, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hear this:"},
                                                      audio_part(wav)]}],
            "max_tokens": 3, "temperature": 0, **extra}


@pytest.fixture(scope="module")
def server(tiny_bpe_path: Path) -> Iterator[RestServer]:
    srv = RestServer(tiny_bpe_path, "--no-webui", "--mmproj",
                     str(ensure_model("tiny-audio-mmproj")), "--no-mmproj-offload",
                     ctx=2048, parallel=1)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def post(server: RestServer, path: str, body: dict[str, Any]) -> httpx.Response:
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        return client.post(path, json=body)


def test_a_chat_with_audio_generates_through_the_bridge(server: RestServer) -> None:
    r = post(server, "/v1/chat/completions", chat(A440))
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    assert usage["completion_tokens"] == 3
    assert usage["prompt_tokens"] > PER_CHUNK
    assert "<__media__>" in post(server, "/apply-template", chat(A440)).json()["prompt"]


def test_a_chat_with_audio_over_grpc(server: RestServer) -> None:
    media = common_pb2.Media(data=A440, mime_type="audio/wav",
                             kind=common_pb2.MEDIA_KIND_AUDIO)
    message = chat_pb2.ChatMessage(role="user", content_parts=chat_pb2.ContentPartList(parts=[
        chat_pb2.ContentPart(type="text", text="Hear this:"),
        chat_pb2.ContentPart(type="input_audio", media=media)]))
    request = chat_pb2.ChatCompletionRequest(messages=[message], max_tokens=3, temperature=0)
    with grpc.insecure_channel(server.grpc_target) as channel:
        replies = list(service_pb2_grpc.LlamaServerStub(channel).ChatCompletion(request,
                                                                                timeout=120))
    assert replies and replies[-1].usage.completion_tokens == 3
    assert replies[-1].usage.prompt_tokens > PER_CHUNK
    bridge = post(server, "/v1/chat/completions", chat(A440)).json()
    text = "".join(c.message.content + c.delta.content for r in replies for c in r.choices)
    assert text == bridge["choices"][0]["message"]["content"]  # the same prompt, greedy


def test_the_same_audio_reuses_the_cache_other_audio_does_not(server: RestServer) -> None:
    def cached(wav: bytes) -> tuple[int, int]:
        r = post(server, "/v1/chat/completions", chat(wav))
        assert r.status_code == 200, r.text
        usage = r.json()["usage"]
        return usage["prompt_tokens_details"]["cached_tokens"], usage["prompt_tokens"]

    cached(A440)
    same, n_prompt = cached(A440)
    assert same == n_prompt - 1  # all but the last token, decoded for its logits
    other, _ = cached(A880)
    assert 0 < other < PER_CHUNK  # only the text before the audio


def test_props_report_audio(server: RestServer) -> None:
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        props = client.get("/props").json()
    assert props["modalities"] == {"vision": False, "audio": True, "video": False}


@pytest.mark.parametrize(("part", "reason"), [
    (audio_part(truncated_wav(0.5)), "truncated audio/wav file"),
    (image_part(GREEN), "image input is not supported"),
])
def test_bad_audio_is_a_400_with_its_reason(server: RestServer, part: dict[str, Any],
                                            reason: str) -> None:
    r = post(server, "/v1/chat/completions",
             {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, part]}]})
    assert r.status_code == 400, r.text
    assert reason in json.loads(r.text)["error"]["message"], r.text
    r = post(server, "/completion", {"prompt": "Hello", "n_predict": 2})
    assert r.status_code == 200 and r.json()["tokens_predicted"] == 2
