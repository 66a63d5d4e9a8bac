"""Request limits (issue 22, item 4): what one request may ask for, each with a default and a flag
of ours (service/cli_flags/table_limits.py), checked before any work is done on the request.

| limit | default | flag | refused with |
| --- | --- | --- | --- |
| request body | 64 MiB | --max-body-bytes | 413 (REST; gRPC: RESOURCE_EXHAUSTED, its cap) |
| prompt text | 16 MiB | --max-prompt-bytes | 400 / INVALID_ARGUMENT, before tokenizing |
| n_probs | 100 | --max-n-probs | 400 / INVALID_ARGUMENT |
| n, n_cmpl | --parallel | -np (llama-server's rule) | 400 / INVALID_ARGUMENT |
| stop strings | 64 | --max-stop-strings | 400 / INVALID_ARGUMENT |
| grammar size | 1 MiB | --max-grammar-bytes | 400 / INVALID_ARGUMENT |
| grammar nesting | 1,000 | --max-grammar-depth | 400 / INVALID_ARGUMENT |
| JSON schema nesting | 64 | --max-schema-depth | 400 / INVALID_ARGUMENT |

The grammar and schema ceilings are the measured safe ones (service.grammar_limits,
service.json_schema_grammar): a flag may lower them, not raise them past what keeps libllama's
recursive parser within its stack. The service sets its limits once at start-up (`configure`);
the checkers read `current()`, so every request path (gRPC, the bridge, Envoy) meets the same.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.engine.params import ParamError

MAX_BODY_BYTES = 64 << 20  # the gRPC message cap of the service and the bridge's channel
MAX_PROMPT_BYTES = 16 << 20
MAX_N_PROBS = 100  # the engine's own ceiling (service.engine.params)
MAX_STOP_STRINGS = 64
GRAMMAR_BYTES_CEILING = 1 << 20  # service.grammar_limits.MAX_GRAMMAR_BYTES
GRAMMAR_DEPTH_CEILING = 1_000  # service.grammar_limits.MAX_NESTING_DEPTH
SCHEMA_DEPTH_CEILING = 64  # service.json_schema_grammar.MAX_SCHEMA_DEPTH


@dataclass(frozen=True)
class RequestLimits:
    max_body_bytes: int = MAX_BODY_BYTES
    max_prompt_bytes: int = MAX_PROMPT_BYTES
    max_n_probs: int = MAX_N_PROBS
    max_stop_strings: int = MAX_STOP_STRINGS
    max_grammar_bytes: int = GRAMMAR_BYTES_CEILING
    max_grammar_depth: int = GRAMMAR_DEPTH_CEILING
    max_schema_depth: int = SCHEMA_DEPTH_CEILING


_current = RequestLimits()


def configure(limits: RequestLimits) -> None:
    """Set the process's limits (the service's start-up, from its flags)."""
    global _current
    _current = limits


def current() -> RequestLimits:
    return _current


def check_prompt_text(text: str | bytes, field: str = "prompt") -> None:
    """A prompt longer than --max-prompt-bytes (UTF-8) is refused before it is tokenized."""
    limit = _current.max_prompt_bytes
    # A str takes at most 4 bytes a character: most prompts pass without being encoded.
    if len(text) * (4 if isinstance(text, str) else 1) <= limit:
        return
    size = len(text.encode("utf-8", "surrogatepass")) if isinstance(text, str) else len(text)
    if size > limit:
        raise ParamError(f"the {field} is {size} bytes; the limit is {limit} "
                         "(--max-prompt-bytes)", field=field)


def check_n_probs(n_probs: int) -> None:
    if n_probs > _current.max_n_probs:
        raise ParamError(f"n_probs must be between 0 and {_current.max_n_probs} "
                         f"(--max-n-probs); got {n_probs}", field="n_probs")


def check_stop_count(stop: tuple[str, ...]) -> None:
    if len(stop) > _current.max_stop_strings:
        raise ParamError(f"too many stop strings: {len(stop)}; the limit is "
                         f"{_current.max_stop_strings} (--max-stop-strings)", field="stop")
