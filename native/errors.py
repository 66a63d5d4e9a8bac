"""Exceptions for llama.cpp failures, raised in one place per documented return code."""

from __future__ import annotations


class LlamaError(RuntimeError):
    """Base class of every error this package raises for llama.cpp."""


class BindingError(LlamaError):
    """The compiled extension is missing, stale, or bound to another library."""


class ModelLoadError(LlamaError):
    """A model file is missing, unreadable, corrupt, or of an unsupported architecture."""


class ContextError(LlamaError):
    """A context could not be created (out of memory, invalid parameters)."""


class InvalidInputError(LlamaError, ValueError):
    """Input that llama.cpp would reject or abort on; raised before any native call."""


class DecodeError(LlamaError):
    """llama_decode / llama_encode returned an error code (see llama.h)."""

    def __init__(self, code: int, what: str = "decode") -> None:
        self.code = code
        super().__init__(f"llama_{what} failed: {describe_decode_code(code)} (code {code})")


class NoKvSlotError(DecodeError):
    """Return code 1: no KV cache slot for the batch; try a smaller batch or a larger context."""


class DecodeAbortedError(DecodeError):
    """Return code 2: the abort callback stopped the computation."""


def describe_decode_code(code: int) -> str:
    # The meanings llama.h documents for llama_decode's return values.
    if code == 1:
        return "could not find a KV slot for the batch (context full)"
    if code == 2:
        return "aborted"
    if code == -1:
        return "invalid input batch"
    return "fatal error"


def decode_error(code: int, what: str = "decode") -> DecodeError:
    if code == 1:
        return NoKvSlotError(code, what)
    if code == 2:
        return DecodeAbortedError(code, what)
    return DecodeError(code, what)


class SamplerError(LlamaError, ValueError):
    """A sampler could not be created (e.g. a grammar that does not parse)."""


class StateError(LlamaError):
    """Saving or restoring a sequence state failed."""


class TokenizeError(LlamaError, ValueError):
    """Tokenization or detokenization failed."""
