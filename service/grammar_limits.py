"""Limits a GBNF grammar must meet before libllama parses it (placeholder: filled in next)."""

from __future__ import annotations


class GrammarLimitError(ValueError):
    """A grammar exceeds a documented size or nesting limit (INVALID_ARGUMENT / HTTP 400)."""


def check_grammar(text: str) -> None:
    """Raise GrammarLimitError if `text` is too large or nests too deeply to parse safely."""
    del text
