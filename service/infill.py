"""Fill-in-the-middle prompts for Infill (POST /infill), laid out as llama-server lays them out.

With the vocabulary's repo-level tokens (FIM_REP, FIM_SEP) the extra files come first as a
small repository; without them, each extra file follows a plain "--- snippet ---" separator:

    [FIM_REP]myproject\\n [FIM_SEP]name\\n text ... [FIM_SEP]filename\\n
    [BOS] [FIM_PRE] prefix prompt [FIM_SUF] suffix [FIM_MID]

(`--spm-infill` swaps the suffix part and the prefix part.) The prefix keeps its last 3/4 of
a batch, the suffix what is left of the 1/4 after the prompt, and the extra context the last
`n_ctx - n_batch - 2 * n_predict` tokens (n_predict being the server's -n): the same budgets
as llama-server, so both send the model the same tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from native.vocab import Vocab
from service.engine.params import ParamError
from service.errors import ServiceError

_SNIPPET_SEPARATOR = "\n\n--- snippet ---\n\n"
_FIM_NAMES = (("pre", "prefix"), ("suf", "suffix"), ("mid", "middle"))


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

    extra_tokens = _extra_context(fim, extra, tokens)
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
                   tokens: Callable[[str], list[int]]) -> list[int]:
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
