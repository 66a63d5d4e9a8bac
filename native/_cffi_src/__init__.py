"""C declarations for the cffi builder, one module per area of llama.h (pyca/cryptography style).

Each module defines TYPES (types and constants) and FUNCTIONS (prototypes). Structs are declared
with `...;` so the C compiler, not us, decides their layout: out-of-line API mode checks every
declaration against the real llama.h when the extension is compiled.
"""

from __future__ import annotations

import hashlib

from native._cffi_src import (
    context,
    core,
    embd,
    ggml,
    interrupt,
    model,
    mtmd,
    ranking,
    sample_parallel,
    sampler,
    vocab,
)

_AREAS = (ggml, core, model, vocab, context, sampler, sample_parallel, ranking,
          interrupt, embd, mtmd)


def declarations() -> str:
    """Every declaration, types first, in the order the builder hands them to cdef()."""
    parts = [a.TYPES for a in _AREAS] + [a.FUNCTIONS for a in _AREAS]
    parts.append("const char * llama_grpc_binding_fingerprint(void);")
    return "\n".join(parts)


def helper_sources() -> str:
    """Our own C code compiled into the extension after llama.h."""
    return sample_parallel.SOURCE + ranking.SOURCE + interrupt.SOURCE + embd.SOURCE


def declarations_digest() -> str:
    """Changes whenever the declarations or our C helpers do (the extension is then stale)."""
    return hashlib.sha256((declarations() + helper_sources()).encode()).hexdigest()[:24]
