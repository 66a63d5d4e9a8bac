"""Tokenize and Detokenize: llama-server's /tokenize and /detokenize over the model's
vocabulary (run off the event loop for long inputs)."""

from __future__ import annotations

from typing import Any

from llama.v1 import tokenize_pb2

from native import Vocab
from service.limits import check_prompt_text


def tokenize(vocab: Vocab, request: Any) -> Any:
    parse_special = request.parse_special if request.HasField("parse_special") else True
    check_prompt_text(request.content, "content")
    tokens = vocab.tokenize(request.content, add_special=request.add_special,
                            parse_special=parse_special)
    resp = tokenize_pb2.TokenizeResponse(tokens=tokens)
    if request.with_pieces:
        for t in tokens:
            piece = vocab.token_to_piece(t, special=True)
            try:
                resp.pieces.add(id=t, piece=piece.decode("utf-8"))
            except UnicodeDecodeError:
                resp.pieces.add(id=t, piece_bytes=piece)
    return resp


def detokenize(vocab: Vocab, request: Any) -> Any:
    text = vocab.detokenize(list(request.tokens))
    return tokenize_pb2.DetokenizeResponse(content=text.decode("utf-8", "replace"))


def prompt_text(vocab: Vocab, tokens: list[int]) -> str:
    """A prompt as text (llama-server's `prompt` in a final message)."""
    return vocab.detokenize(tokens).decode("utf-8", "replace")
