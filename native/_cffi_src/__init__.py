"""C declarations for the cffi builder, one module per area of llama.h (pyca/cryptography style).

Each module defines TYPES (types and constants) and FUNCTIONS (prototypes). Structs are declared
with `...;` so the C compiler, not us, decides their layout: out-of-line API mode checks every
declaration against the real llama.h when the extension is compiled.
"""
