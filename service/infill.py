"""Fill-in-the-middle prompts for Infill (POST /infill), laid out as llama-server lays them out.

With the vocabulary's repo-level tokens (FIM_REP, FIM_SEP) the extra files come first as a
small repository; without them, each extra file follows a plain "--- snippet ---" separator:

    [FIM_REP]myproject\\n [FIM_SEP]name\\n text ... [FIM_SEP]filename\\n
    [BOS] [FIM_PRE] prefix prompt [FIM_SUF] suffix [FIM_MID]

(`--spm-infill` swaps the suffix part and the prefix part.) The prefix keeps its last 3/4 of
a batch, the suffix what is left of the 1/4 after the prompt, and the extra context the last
`n_ctx - n_batch - 2 * n_predict` tokens (n_predict being the server's -n): the same budgets
as llama-server, so both send the model the same tokens.

Editor plugins send the same `input_extra` files with every request (llama.vim and
llama.vscode keep a ring of chunks and send all of it each time), so each file's tokens are
kept by text (`ExtraTokens`): a warm request tokenizes only its prefix and suffix. Tokenizing
~2,000 tokens of files costs ~2 ms, as much as the rest of a warm request's first token
(docs/benchmarks.md, issue 20).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from native.vocab import Vocab
from service.engine.params import ParamError
from service.errors import ServiceError

_SNIPPET_SEPARATOR = "\n\n--- snippet ---\n\n"
_FIM_NAMES = (("pre", "prefix"), ("suf", "suffix"), ("mid", "middle"))
# Tokens of extra-context texts kept per vocabulary: a plugin's ring of chunks is ~10-20k
# tokens (llama.vim: 16 chunks of 64 lines); ~36 bytes a kept token id in Python.
EXTRA_CACHE_TOKENS = 1 << 16


class ExtraTokens:
    """Token ids of texts (tokenized without special tokens), the most recently used kept up
    to `budget` tokens in all; safe to share between the threads that prepare requests."""

    def __init__(self, vocab: Vocab, budget: int = EXTRA_CACHE_TOKENS,
                 largest: int | None = None) -> None:
        self._vocab = weakref.ref(vocab)  # the cache hangs off the vocabulary: no cycle
        self.budget = budget
        # a text of more tokens is not kept: one large file must not flush the others
        self.largest = budget // 4 if largest is None else largest
        self.n_tokens = 0
        self._kept: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, text: str) -> tuple[int, ...]:
        if not text:
            return ()
        with self._lock:
            found = self._kept.get(text)
            if found is not None:
                self._kept.move_to_end(text)
                return found
        vocab = self._vocab()
        assert vocab is not None  # a caller holds it
        tokens = tuple(vocab.tokenize(text, add_special=False, parse_special=False))
        if len(tokens) <= self.largest:
            self._keep(text, tokens)
        return tokens

    def _keep(self, text: str, tokens: tuple[int, ...]) -> None:
        with self._lock:
            if text in self._kept:  # another thread tokenized it meanwhile
                return
            self._kept[text] = tokens
            self.n_tokens += len(tokens)
            while self.n_tokens > self.budget:
                _, dropped = self._kept.popitem(last=False)
                self.n_tokens -= len(dropped)


_extra_caches: weakref.WeakKeyDictionary[Vocab, ExtraTokens] = weakref.WeakKeyDictionary()
_extra_caches_lock = threading.Lock()


def extra_tokens_of(vocab: Vocab) -> ExtraTokens:
    """The vocabulary's cache of extra-context tokens (made on first use)."""
    with _extra_caches_lock:
        cache = _extra_caches.get(vocab)
        if cache is None:
            cache = _extra_caches[vocab] = ExtraTokens(vocab)
        return cache


@dataclass(frozen=True)
class InfillBudget:
    """The server settings the layout depends on."""

    n_batch: int
    n_predict: int  # the server's -n: -1 when unlimited
    n_ctx: int  # one slot's context
    spm: bool  # --spm-infill


def check_fim_support(vocab: Vocab) -> dict[str, int]:
    """The vocabulary's FIM tokens; llama-server's 501 when prefix, suffix or middle is absent."""
    fim = vocab.fim_tokens()
    missing = "".join(f"{name} token is missing. " for key, name in _FIM_NAMES if fim[key] < 0)
    if missing:
        raise ServiceError("unimplemented", f"Infill is not supported by this model: {missing}")
    return fim


def infill_prompt(vocab: Vocab, prefix: str, suffix: str, extra: Sequence[tuple[str, str]],
                  prompt: list[int], budget: InfillBudget) -> list[int]:
    """The whole infill prompt as tokens; `extra` is (filename, text) pairs, `prompt` the
    request's own prompt, already tokenized (it goes right after the prefix)."""
    fim = check_fim_support(vocab)

    def tokens(text: str) -> list[int]:
        return vocab.tokenize(text, add_special=False, parse_special=False) if text else []

    extra_tokens = _extra_context(fim, extra, extra_tokens_of(vocab))
    prefix_tokens, suffix_tokens = tokens(prefix), tokens(suffix)
    n_prefix = min(len(prefix_tokens), 3 * (budget.n_batch // 4))
    n_suffix = min(len(suffix_tokens), max(0, budget.n_batch // 4 - (2 + len(prompt))))
    n_extra = min(max(0, budget.n_ctx - budget.n_batch - 2 * budget.n_predict),
                  len(extra_tokens))

    head = [fim["pre"], *prefix_tokens[len(prefix_tokens) - n_prefix:], *prompt]
    tail = [fim["suf"], *suffix_tokens[:n_suffix]]
    first, second = (tail, head) if budget.spm else (head, tail)
    bos = [vocab.bos] if vocab.add_bos else []
    kept_extra = extra_tokens[len(extra_tokens) - n_extra:]
    return [*kept_extra, *bos, *first, *second, fim["mid"]]


def _extra_context(fim: dict[str, int], extra: Sequence[tuple[str, str]],
                   tokens: Callable[[str], Sequence[int]]) -> list[int]:
    out: list[int] = []
    repo_level = fim["sep"] >= 0
    if fim["rep"] >= 0:
        out += [fim["rep"], *tokens("myproject\n")]
    for filename, text in extra:
        if repo_level:
            out += [fim["sep"], *tokens(f"{filename or 'tmp'}\n")]
        else:
            out += tokens(_SNIPPET_SEPARATOR)
        out += tokens(text)
    if repo_level:
        out += [fim["sep"], *tokens("filename\n")]  # llama-server's name for the current file
    return out


def infill_inputs(req: Any) -> tuple[str, str, list[tuple[str, str]], str]:
    """prefix, suffix, extra files and prompt text of an Infill request; the prompt must be a
    string when given (llama-server's rule)."""
    prompt = ""
    which = req.WhichOneof("prompt_input")
    if which == "prompt":
        value = req.prompt
        if value.WhichOneof("kind") != "string_value":
            raise ParamError('"prompt" must be a string')
        prompt = value.string_value
    elif which is not None:
        raise ParamError('"prompt" must be a string')
    extra = [(chunk.filename, chunk.text) for chunk in req.input_extra]
    return req.input_prefix, req.input_suffix, extra, prompt
