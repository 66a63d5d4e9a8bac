"""C declarations for the cffi builder, one module per area of llama.h (pyca/cryptography style).

Each module defines TYPES (types and constants) and FUNCTIONS (prototypes). Structs are declared
with `...;` so the C compiler, not us, decides their layout: out-of-line API mode checks every
declaration against the real llama.h when the extension is compiled.
"""

from __future__ import annotations

import hashlib

from native._cffi_src import context, core, ggml, model, sampler, vocab

_AREAS = (ggml, core, model, vocab, context, sampler)


def declarations() -> str:
    """Every declaration, types first, in the order the builder hands them to cdef()."""
    parts = [a.TYPES for a in _AREAS] + [a.FUNCTIONS for a in _AREAS]
    parts.append("const char * llama_grpc_binding_fingerprint(void);")
    return "\n".join(parts)


def declarations_digest() -> str:
    return hashlib.sha256(declarations().encode()).hexdigest()[:24]
