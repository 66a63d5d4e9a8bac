"""Tokenization through our binding matches llama.cpp's own reference data exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

import native
from native import build

SEP = "\n__ggml_vocab_test__\n"
VOCABS = ["llama-bpe", "llama-spm", "bert-bge", "qwen2", "phi-3"]


def _vocab_path(name: str) -> Path:
    return build.ensure_source() / "models" / f"ggml-vocab-{name}.gguf"


def _read_cases(name: str) -> list[tuple[str, list[int]]]:
    path = _vocab_path(name)
    raw = Path(f"{path}.inp").read_text(encoding="utf-8")
    inputs = raw.split(SEP)
    if inputs and inputs[-1] == "":
        inputs.pop()  # the file ends with a separator
    outputs = Path(f"{path}.out").read_text(encoding="utf-8").split("\n")
    outputs = outputs[: len(inputs)]
    assert len(inputs) == len(outputs)
    return [(s, [int(t) for t in o.split()]) for s, o in zip(inputs, outputs, strict=True)]


@pytest.fixture(scope="module", params=VOCABS)
def vocab_case(request: pytest.FixtureRequest) -> tuple[str, native.Vocab]:
    model = native.Model(_vocab_path(request.param), native.ModelParams(vocab_only=True))
    return request.param, model.vocab


def test_tokenize_matches_reference(vocab_case: tuple[str, native.Vocab]) -> None:
    name, vocab = vocab_case
    cases = _read_cases(name)
    assert len(cases) > 20
    mismatches = [(text, want, vocab.tokenize(text, add_special=False, parse_special=False))
                  for text, want in cases]
    mismatches = [m for m in mismatches if m[1] != m[2]]
    assert not mismatches, (
        f"{name}: {len(mismatches)} of {len(cases)} differ, first {mismatches[0]}")


@pytest.mark.parametrize("name", ["llama-bpe", "qwen2"])
def test_byte_level_bpe_roundtrip(name: str) -> None:
    vocab = native.Model(_vocab_path(name), native.ModelParams(vocab_only=True)).vocab
    for text, _ in _read_cases(name):
        tokens = vocab.tokenize(text, add_special=False)
        assert vocab.detokenize(tokens).decode("utf-8") == text


def test_multibyte_split_across_tokens_yields_bytes() -> None:
    vocab = native.Model(_vocab_path("llama-bpe"), native.ModelParams(vocab_only=True)).vocab
    text = "🦙"  # 4 UTF-8 bytes that the Llama-3 vocabulary splits over several tokens
    tokens = vocab.tokenize(text, add_special=False)
    pieces = [vocab.token_to_piece(t) for t in tokens]
    assert len(tokens) > 1
    assert any(p.decode("utf-8", "replace") != p.decode("utf-8", "ignore") or not p
               for p in pieces), "expected at least one piece that is not whole UTF-8"
    assert b"".join(pieces) == text.encode("utf-8")
    assert b"\xef\xbf\xbd" not in b"".join(pieces)  # no U+FFFD replacement characters


def test_special_tokens_parse_and_render() -> None:
    vocab = native.Model(_vocab_path("llama-bpe"), native.ModelParams(vocab_only=True)).vocab
    toks = vocab.tokenize("<|eot_id|>", add_special=False, parse_special=True)
    assert toks == [vocab.eot]
    assert vocab.token_to_piece(vocab.eot, special=True) == b"<|eot_id|>"
    assert vocab.token_to_piece(vocab.eot, special=False) == b""
    assert vocab.tokenize("hi", add_special=True)[0] == vocab.bos
    assert vocab.is_eog(vocab.eot)


def test_invalid_token_ids_raise() -> None:
    vocab = native.Model(_vocab_path("llama-bpe"), native.ModelParams(vocab_only=True)).vocab
    for bad in (-1, vocab.n_tokens, 2**31 - 1):
        with pytest.raises(native.InvalidInputError, match="outside the vocabulary"):
            vocab.token_to_piece(bad)
        with pytest.raises(native.InvalidInputError, match="outside the vocabulary"):
            vocab.detokenize([1, bad])
