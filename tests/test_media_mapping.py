"""Unit tests of the request-level media logic: the REST bridge's mapping of JSON media into
the typed fields (rest_bridge.media_json through jsonio.to_message) and the service's checks
of a whole request (service.media_request), on real llama.v1 messages; no server."""

from __future__ import annotations

import base64
import io
import wave
from typing import Any

import pytest
from google.protobuf import json_format
from llama.v1 import chat_pb2, common_pb2, completion_pb2, embedding_pb2
from PIL import Image

from api_common.media_uri import MAX_MEDIA_BYTES
from rest_bridge.errors import BridgeError
from rest_bridge.jsonio import to_message
from service.errors import ServiceError
from service.media_request import NO_PROJECTOR, check_request_media


def _png(size: tuple[int, int] = (3, 2)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size).save(out, format="PNG")
    return out.getvalue()


PNG = _png()
PNG64 = base64.b64encode(PNG).decode()


def refused(request: Any) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        check_request_media(None, request)
    assert caught.value.kind == "invalid_argument"
    return caught.value


def test_chat_media_parts_become_typed_content_parts() -> None:
    body = {"messages": [
        {"role": "system", "content": "plain"},
        {"role": "user", "name": "u", "content": [
            {"type": "text", "text": "look"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG64}",
                                                "detail": "low"}},
            {"type": "input_audio", "input_audio": {"data": PNG64, "format": "mp3"}}]}]}
    request = to_message(body, chat_pb2.ChatCompletionRequest())
    assert request.messages[0].content.string_value == "plain"
    user = request.messages[1]
    assert user.WhichOneof("content_input") == "content_parts" and user.name == "u"
    text, image, audio = user.content_parts.parts
    assert (text.type, text.text) == ("text", "look")
    assert (image.type, image.media.data, image.media.mime_type, image.media.kind) == \
        ("image_url", PNG, "image/png", common_pb2.MEDIA_KIND_IMAGE)
    assert (audio.media.mime_type, audio.media.kind) == ("audio/mpeg",
                                                         common_pb2.MEDIA_KIND_AUDIO)
    # the audio part holds an image: the service says so, naming the part
    assert "messages[1].content[2].input_audio: declared audio/mpeg but the bytes are " \
        "image/png" in str(refused(request))


def test_bodies_without_media_are_untouched() -> None:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}]}
    request = to_message(body, chat_pb2.ChatCompletionRequest())
    assert request.messages[0].WhichOneof("content_input") == "content"
    check_request_media(None, request)  # nothing to refuse


def test_a_message_with_other_parts_stays_json() -> None:
    body = {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG64}"}},
        {"type": "video", "video": "x"}]}]}
    request = to_message(body, chat_pb2.ChatCompletionRequest())
    assert request.messages[0].WhichOneof("content_input") == "content"
    assert "image input is not supported" in str(refused(request))  # read from the JSON too


@pytest.mark.parametrize(("part", "why"), [
    ({"type": "image_url", "image_url": {"url": "https://a/b.png"}}, "not fetched"),
    ({"type": "image_url", "image_url": {}}, "must hold the media as a string"),
    ({"type": "input_audio", "input_audio": {"data": PNG64, "format": "ogg"}},
     "unsupported input_audio format 'ogg'"),
    ({"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@@"}},
     "invalid base64")])
def test_bridge_refuses_bad_text_with_the_services_words(part: dict[str, Any], why: str) -> None:
    body = {"messages": [{"role": "user", "content": [part]}]}
    with pytest.raises(BridgeError, match=why) as caught:
        to_message(body, chat_pb2.ChatCompletionRequest())
    assert caught.value.status == 400
    # a gRPC client sending the same JSON content gets the same words from the service
    request = json_format.ParseDict(body, chat_pb2.ChatCompletionRequest())
    assert why in str(refused(request))


def test_image_data_placeholders() -> None:
    def req(prompt: str, *ids: int) -> Any:
        return to_message({"prompt": prompt, "image_data": [{"data": PNG64, "id": i}
                                                            for i in ids]},
                          completion_pb2.CompletionRequest())
    assert str(refused(req("[img-1] and [img-2]", 2, 1))) == NO_PROJECTOR
    assert "[img-3] names no image" in str(refused(req("[img-3]", 1)))
    assert "id 2 is not referenced" in str(refused(req("[img-1]", 1, 2)))
    assert "referenced more than once" in str(refused(req("[img-1][img-1]", 1)))
    assert "id 1 is given twice" in str(refused(req("[img-1][img-1]", 1, 1)))
    chat = to_message({"messages": [{"role": "user", "content": "[img-4] what?"}],
                       "image_data": [{"data": PNG64, "id": 4}]}, chat_pb2.ChatCompletionRequest())
    assert str(refused(chat)).startswith("image input is not supported")  # chat's words


def test_typed_prompts() -> None:
    def req(text: str, **media: Any) -> Any:
        prompt = common_pb2.TypedPrompt(pieces=[common_pb2.PromptPiece(text=text)], **media)
        return completion_pb2.CompletionRequest(
            typed_prompt=common_pb2.PromptList(prompts=[prompt]))
    assert str(refused(req("<__media__>", multimodal_data=[PNG]))) == NO_PROJECTOR
    both = req("<__media__><__media__>", multimodal_data=[PNG], media=[common_pb2.Media(
        data=PNG)])
    assert "set multimodal_data or media, not both" in str(refused(both))
    assert "0 <__media__> markers for 1" in str(refused(req("x", media=[common_pb2.Media(
        data=PNG)])))
    embed = embedding_pb2.EmbedRequest(typed_input=common_pb2.PromptList(prompts=[
        common_pb2.TypedPrompt(pieces=[common_pb2.PromptPiece(text="<__media__>")],
                               media=[common_pb2.Media(data=PNG, mime_type="image/tiff")])]))
    assert "unsupported MIME type image/tiff" in str(refused(embed))


def test_typed_part_with_media_and_url_is_refused() -> None:
    part = chat_pb2.ContentPart(type="image_url", image_url=chat_pb2.ImageUrl(url=PNG64),
                                media=common_pb2.Media(data=PNG))
    request = chat_pb2.ChatCompletionRequest(messages=[chat_pb2.ChatMessage(
        role="user", content_parts=chat_pb2.ContentPartList(parts=[part]))])
    assert "set media or the image_url text, not both" in str(refused(request))


def test_request_byte_limit() -> None:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:  # a valid WAV of MAX_MEDIA_BYTES / 2.5: three are too many
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(bytes(MAX_MEDIA_BYTES * 2 // 5))
    big = out.getvalue()
    request = completion_pb2.CompletionRequest(typed_prompt=common_pb2.PromptList(prompts=[
        common_pb2.TypedPrompt(pieces=[common_pb2.PromptPiece(text="<__media__>" * 3)],
                               multimodal_data=[big, big, big])]))
    message = str(refused(request))
    assert message.startswith("media too large: over"), message[:200]


def test_typed_part_kind_must_match_the_part() -> None:
    part = chat_pb2.ContentPart(type="image_url", media=common_pb2.Media(
        data=PNG, kind=common_pb2.MEDIA_KIND_AUDIO))
    request = chat_pb2.ChatCompletionRequest(messages=[chat_pb2.ChatMessage(
        role="user", content_parts=chat_pb2.ContentPartList(parts=[part]))])
    assert "an image_url part's media must be image, not audio" in str(refused(request))
