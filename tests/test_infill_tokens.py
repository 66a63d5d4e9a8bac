"""The extra context's tokens kept by text (service.infill.ExtraTokens): what an editor plugin's
repeated `input_extra` files cost after the first request. Real vocabularies (tiny-fim-repo,
tiny-fim); the kept tokens must be exactly what tokenizing again gives."""

from __future__ import annotations

from typing import Any

import pytest

from native.model import Model, ModelParams
from native.testmodels import ensure_model
from service.infill import ExtraTokens, InfillBudget, extra_tokens_of, infill_prompt

WIDE = InfillBudget(n_batch=2048, n_predict=-1, n_ctx=8192, spm=False)
FILES = [(f"src/m{i}.py", f"def f{i}(x):\n    return x * {i}  # {'é' * i}\n")
         for i in range(6)]


@pytest.fixture(scope="module")
def repo_vocab() -> Any:
    return Model(ensure_model("tiny-fim-repo"), ModelParams(vocab_only=True)).vocab


@pytest.fixture(scope="module")
def plain_vocab() -> Any:
    return Model(ensure_model("tiny-fim"), ModelParams(vocab_only=True)).vocab


class CountingVocab:
    """A real vocabulary that counts its tokenize calls (ExtraTokens only calls tokenize)."""

    def __init__(self, vocab: Any) -> None:
        self.vocab, self.calls = vocab, 0

    def tokenize(self, text: str, add_special: bool, parse_special: bool) -> list[int]:
        self.calls += 1
        return list(self.vocab.tokenize(text, add_special=add_special,
                                        parse_special=parse_special))


def _plain(vocab: Any, text: str) -> tuple[int, ...]:
    return tuple(vocab.tokenize(text, add_special=False, parse_special=False))


def test_kept_tokens_are_the_tokenizers(repo_vocab: Any) -> None:
    counting = CountingVocab(repo_vocab)
    cache = ExtraTokens(counting)  # type: ignore[arg-type]
    texts = [text for _, text in FILES] + ["<fim_prefix> is text here\n", ""]
    first = [cache(t) for t in texts]
    calls = counting.calls
    again = [cache(t) for t in texts]
    assert first == again == [_plain(repo_vocab, t) for t in texts]
    assert calls == len(texts) - 1  # the empty text is no call
    assert counting.calls == calls  # the second round tokenized nothing


def test_the_least_recently_used_go_first_and_a_large_text_is_not_kept(
        repo_vocab: Any) -> None:
    counting = CountingVocab(repo_vocab)
    a, b, c = "alpha beta gamma\n", "delta epsilon\n", "zeta eta theta iota\n"
    sizes = {t: len(_plain(repo_vocab, t)) for t in (a, b, c)}
    # all three do not fit together
    cache = ExtraTokens(counting, budget=sum(sizes.values()) - 1,  # type: ignore[arg-type]
                        largest=max(sizes.values()))
    cache(a), cache(b), cache(a), cache(c)  # b is now the least recently used
    assert cache.n_tokens == sizes[a] + sizes[c]
    calls = counting.calls
    cache(a), cache(c)
    assert counting.calls == calls  # both kept
    cache(b)
    assert counting.calls == calls + 1  # b was dropped
    big = "x = [" + ", ".join(str(i) for i in range(200)) + "]\n"
    assert len(_plain(repo_vocab, big)) > cache.largest
    assert cache(big) == _plain(repo_vocab, big)
    cache(big)
    assert counting.calls == calls + 3  # tokenized each time, never kept
    assert cache.n_tokens <= cache.budget


def test_infill_prompts_are_the_same_from_the_cache(repo_vocab: Any, plain_vocab: Any) -> None:
    for vocab in (repo_vocab, plain_vocab):
        first = infill_prompt(vocab, "def g():\n", "\n", FILES, [], WIDE)
        assert extra_tokens_of(vocab).n_tokens > 0
        assert infill_prompt(vocab, "def g():\n", "\n", FILES, [], WIDE) == first
    # each vocabulary has its own cache: the same texts, other tokens
    assert extra_tokens_of(repo_vocab) is not extra_tokens_of(plain_vocab)
    text = FILES[1][1]
    assert extra_tokens_of(repo_vocab)(text) == _plain(repo_vocab, text)
    assert extra_tokens_of(plain_vocab)(text) == _plain(plain_vocab, text)
    assert _plain(repo_vocab, text) != _plain(plain_vocab, text)
