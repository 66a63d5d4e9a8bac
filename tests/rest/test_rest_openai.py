"""The official `openai` package against the bridge: chat completions and completions,
streaming and not, and model listing. Its pydantic objects must parse our JSON.

The model has random weights: texts are gibberish, so the tests compare runs with each other
(greedy sampling is deterministic) rather than with expected words."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypedDict

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam
from rest_harness import RestServer

pytestmark = pytest.mark.slow

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Name a colour."}]


# Keyword arguments shared by a streaming and a non-streaming call: typed, so that mypy picks
# the SDK's overload (and its return type) from the `stream` argument of each call.
class ChatArgs(TypedDict):
    model: str
    messages: list[ChatCompletionMessageParam]
    max_tokens: int
    temperature: float
    seed: int


class CompletionArgs(TypedDict):
    model: str
    prompt: str
    max_tokens: int
    temperature: float
    seed: int


@pytest.fixture()
def client(rest_server: RestServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=rest_server.url + "/v1", api_key="sk-no-key-required",
                       max_retries=0, timeout=60.0) as c:
        yield c


def test_chat_completion(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model="gpt-3.5-turbo", messages=MESSAGES,
                                          max_tokens=8, temperature=0, seed=1)
    assert resp.object == "chat.completion"
    assert resp.id.startswith("chatcmpl-")
    assert len(resp.choices) == 1
    choice = resp.choices[0]
    assert choice.index == 0
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert resp.usage is not None
    assert resp.usage.completion_tokens <= 8
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_chat_completion_stream_matches_non_stream(client: openai.OpenAI) -> None:
    args: ChatArgs = {"model": "m", "messages": MESSAGES, "max_tokens": 8, "temperature": 0,
                      "seed": 3}
    whole = client.chat.completions.create(**args)
    chunks = list(client.chat.completions.create(
        **args, stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == whole.choices[0].finish_reason
    assert all(f is None for f in finishes[:-1])
    # include_usage: a last chunk with no choices carries the usage.
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    # usage is Optional in the SDK's types; a missing one fails this line as it should.
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]


def test_chat_stream_without_include_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="m", messages=MESSAGES, max_tokens=3, temperature=0, stream=True))
    assert chunks and all(c.choices for c in chunks)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_completion(client: openai.OpenAI) -> None:
    resp = client.completions.create(model="davinci-002", prompt="I believe the meaning of life is",
                                     max_tokens=8, temperature=0, seed=5)
    assert resp.object == "text_completion"
    assert len(resp.choices) == 1
    assert isinstance(resp.choices[0].text, str) and resp.choices[0].text
    assert resp.choices[0].finish_reason in ("stop", "length")
    assert resp.usage is not None and resp.usage.completion_tokens <= 8


def test_completion_stream_matches_non_stream(client: openai.OpenAI) -> None:
    args: CompletionArgs = {"model": "m", "prompt": "Once upon a time", "max_tokens": 8,
                            "temperature": 0, "seed": 7}
    whole = client.completions.create(**args)
    chunks = list(client.completions.create(**args, stream=True))
    assert all(c.object == "text_completion" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].usage is not None


def test_completion_with_n_probs(client: openai.OpenAI) -> None:
    # llama-server's own option on the OpenAI route; logprobs come as {"content": [...]}.
    resp = client.completions.create(model="m", prompt="Hello", max_tokens=3, temperature=0,
                                     extra_body={"n_probs": 2})
    logprobs = resp.choices[0].logprobs
    assert logprobs is not None
    content = logprobs.model_extra["content"]  # type: ignore[index]
    assert len(content) == resp.usage.completion_tokens  # type: ignore[union-attr]
    assert all(len(p["top_logprobs"]) == 2 for p in content)


def test_completion_stream_with_n_probs(client: openai.OpenAI) -> None:
    chunks = list(client.completions.create(model="m", prompt="Hello", max_tokens=3,
                                            temperature=0, stream=True,
                                            extra_body={"n_probs": 2}))
    with_probs = [c for c in chunks if c.choices[0].logprobs is not None]
    assert len(with_probs) == 3
    for c in with_probs:
        # logprobs is not None here (filtered above); model_extra is Optional in pydantic's
        # types although the SDK's models always keep extra fields.
        content = c.choices[0].logprobs.model_extra["content"]  # type: ignore[union-attr,index]
        assert len(content) == 1 and len(content[0]["top_logprobs"]) == 2


def test_completion_with_openai_logprobs(client: openai.OpenAI) -> None:
    # OpenAI's `logprobs: N` means n_probs = N when n_probs is unset (completion.proto).
    resp = client.completions.create(model="m", prompt="Hello", max_tokens=3, temperature=0,
                                     logprobs=2)
    assert resp.choices[0].logprobs is not None


def test_models(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert len(models.data) == 1
    model = models.data[0]
    assert model.object == "model" and model.owned_by == "llamacpp"
    assert model.id.endswith(".gguf")
    assert isinstance(model.created, int)


def test_a_request_id_is_the_completions_id(client: openai.OpenAI) -> None:
    """llama-grpc's `request_id` (a body field the OpenAI SDK passes through extra_body) is the
    response's id, in every chunk of a stream too."""
    done = client.chat.completions.create(model="x", messages=[{"role": "user", "content": "Hi"}],
                                          max_tokens=2, extra_body={"request_id": "sdk-1"})
    assert done.id == "sdk-1"
    chunks = list(client.chat.completions.create(
        model="x", messages=[{"role": "user", "content": "Hi"}], max_tokens=2, stream=True,
        extra_body={"request_id": "sdk-2"}))
    assert chunks and all(c.id == "sdk-2" for c in chunks)
