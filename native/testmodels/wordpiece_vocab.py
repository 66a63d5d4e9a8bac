"""Turn a Hugging Face BERT WordPiece tokenizer (vocab.txt + tokenizer.json) into llama.cpp's form.

llama.cpp's WPM tokenizer expects "phantom space" tokens: a word-initial piece carries a leading
U+2581 and a continuation piece ("##ing") loses its "##"; special tokens ([CLS], [SEP], ...) stay
as written and are typed CONTROL so they are never produced from plain text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import gguf

_WORD_START = "\u2581"
_SPECIAL_ROLES = ("unk", "sep", "pad", "cls", "mask")


@dataclass(frozen=True)
class WordPieceVocab:
    tokens: tuple[str, ...]
    token_types: tuple[int, ...]
    special_ids: dict[str, int]  # role ("cls", "sep", ...) -> token id


def _phantom(token: str, is_special: bool) -> str:
    if is_special:
        return token
    if token.startswith("##"):
        return token[2:]
    return _WORD_START + token


def _special_token_ids(model_dir: Path) -> set[int]:
    tokenizer = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    return {int(t["id"]) for t in tokenizer.get("added_tokens", []) if t.get("special")}


def _special_roles(model_dir: Path, index: dict[str, int]) -> dict[str, int]:
    mapping = json.loads((model_dir / "special_tokens_map.json").read_text(encoding="utf-8"))
    roles = {}
    for role in _SPECIAL_ROLES:
        entry = mapping.get(f"{role}_token")
        text = entry.get("content") if isinstance(entry, dict) else entry
        if text is not None:
            roles[role] = index[text]
    return roles


def load_wordpiece_vocab(model_dir: Path) -> WordPieceVocab:
    """Read vocab.txt (one token per line, id = line number) and the special-token files."""
    raw = (model_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")
    if raw and raw[-1] == "":
        raw.pop()
    specials = _special_token_ids(model_dir)
    tokens = tuple(_phantom(tok, i in specials) for i, tok in enumerate(raw))
    control, normal = gguf.TokenType.CONTROL, gguf.TokenType.NORMAL
    types = tuple(int(control if i in specials else normal) for i in range(len(raw)))
    index = {token: token_id for token_id, token in enumerate(raw)}
    return WordPieceVocab(tokens, types, _special_roles(model_dir, index))
