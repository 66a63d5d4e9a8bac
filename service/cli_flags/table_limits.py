"""Flag table, part 5: request limits (issue 22, item 4). All ours: llama-server has none of
them (its only guard is the context size). Defaults and what each refuses: service/limits.py."""

from __future__ import annotations

from typing import TYPE_CHECKING

from service import limits as L
from service.cli_flags import values as v
from service.cli_flags.spec import FlagSpec, implemented

if TYPE_CHECKING:
    from service.config_derive import Settings

LIMITS = "Request limits (llama-grpc-server only)"


def _limit(flag: str, dest: str, help: str, default: int, minimum: int,
           maximum: int | None = None) -> FlagSpec:
    env = "LLAMA_ARG_" + flag.lstrip("-").replace("-", "_").upper()
    return implemented((flag,), dest, LIMITS, help + " (llama-grpc-server only)", metavar="N",
                       env=(env,), convert=v.parse_int, default=default, minimum=minimum,
                       maximum=maximum)


LIMIT_FLAGS: tuple[FlagSpec, ...] = (
    _limit("--max-body-bytes", "max_body_bytes",
           "largest HTTP request body the REST bridge reads; a larger one is refused with 413",
           L.MAX_BODY_BYTES, 1),
    _limit("--max-prompt-bytes", "max_prompt_bytes",
           "largest prompt text (UTF-8 bytes) tokenized for a request; a longer one is a 400",
           L.MAX_PROMPT_BYTES, 1),
    _limit("--max-n-probs", "max_n_probs", "largest n_probs (top_logprobs) a request may ask "
           "for", L.MAX_N_PROBS, 0, L.MAX_N_PROBS),
    _limit("--max-stop-strings", "max_stop_strings",
           "most stop strings a request may give", L.MAX_STOP_STRINGS, 0),
    _limit("--max-grammar-bytes", "max_grammar_bytes", "largest GBNF grammar a request may "
           "give (also the grammar a JSON schema becomes)", L.GRAMMAR_BYTES_CEILING, 1,
           L.GRAMMAR_BYTES_CEILING),
    _limit("--max-grammar-depth", "max_grammar_depth", "deepest nesting of groups ( ... ) in "
           "a grammar", L.GRAMMAR_DEPTH_CEILING, 1, L.GRAMMAR_DEPTH_CEILING),
    _limit("--max-schema-depth", "max_schema_depth", "deepest nesting of a JSON schema "
           "(properties, items, anyOf alternatives and $ref targets each count one)",
           L.SCHEMA_DEPTH_CEILING, 1, L.SCHEMA_DEPTH_CEILING),
)


def limits_of(settings: Settings) -> L.RequestLimits:
    """The RequestLimits these resolved settings ask for (service.config_derive.Settings)."""
    return L.RequestLimits(**{f.key: settings.int_(f.key) for f in LIMIT_FLAGS})
