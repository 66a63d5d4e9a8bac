"""Tokenize and Detokenize: llama-server's /tokenize and /detokenize over the model's
vocabulary (run off the event loop for long inputs)."""

from __future__ import annotations

from typing import Any

from llama.v1 import tokenize_pb2

from native import Vocab
from service.engine.params import ParamError
from service.limits import check_prompt_text


def tokenize(vocab: Vocab, request: Any) -> Any:
    parse_special = request.parse_special if request.HasField("parse_special") else True
    if request.content_pieces:
        tokens = _tokenize_pieces(vocab, request, parse_special)
    else:
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


def _tokenize_pieces(vocab: Vocab, request: Any, parse_special: bool) -> list[int]:
    """llama-server's tokenize_mixed: special tokens (BOS) only for a first piece that is text,
    token ids passed through as they are (with_pieces checks them when it reads their text)."""
    if request.content:
        raise ParamError("set content or content_pieces, not both", field="content_pieces")
    texts = [p.text for p in request.content_pieces if p.WhichOneof("piece") == "text"]
    check_prompt_text("".join(texts), "content")
    tokens: list[int] = []
    for i, piece in enumerate(request.content_pieces):
        kind = piece.WhichOneof("piece")
        if kind == "text":
            tokens += vocab.tokenize(piece.text, add_special=request.add_special and i == 0,
                                     parse_special=parse_special)
        elif kind == "tokens":
            tokens += piece.tokens.ids
        else:
            raise ParamError(f"content_pieces[{i}]: set text or tokens",
                             field=f"content_pieces[{i}]")
    return tokens


def detokenize(vocab: Vocab, request: Any) -> Any:
    text = vocab.detokenize(list(request.tokens))
    return tokenize_pb2.DetokenizeResponse(content=text.decode("utf-8", "replace"))


def prompt_text(vocab: Vocab, tokens: list[int]) -> str:
    """A prompt as text (llama-server's `prompt` in a final message); a medium's placeholder
    ids (negative: service/engine/media.py) are left out."""
    if tokens and min(tokens) < 0:
        tokens = [t for t in tokens if t >= 0]
    return vocab.detokenize(tokens).decode("utf-8", "replace")
