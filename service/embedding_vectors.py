"""Embedding vectors as float32 arrays (array.array 'f'), from llama.cpp's output to the response
message.

A vector never becomes one Python float per value on the service's side: it is copied out of
llama.cpp as a float32 array, normalized in C (native/_cffi_src/embd.c, rounding as
llama-server's common_embd_normalize), and put into its `repeated float` field as the field's
wire bytes (a packed field is its little-endian float32 values as they are), which protobuf's C
parser copies in one piece. One Python float per value cost more than the rest of the response
(docs/benchmarks.md, "Embeddings and reranking").

No numpy: once imported, it makes libllama's CPU matrix kernels ~3% slower in the same process
(tests/test_grpc_server.py, test_the_server_process_never_loads_numpy; an embedding server too:
tests/test_embeddings.py).
"""

from __future__ import annotations

import sys
from array import array
from typing import TYPE_CHECKING

from google.protobuf.message import Message

from native._ffi import ffi, lib

if TYPE_CHECKING:
    FloatArray = array[float]  # of typecode "f": float32 values


def float_array(values: memoryview[float]) -> FloatArray:
    """A float32 array of a float32 memoryview's values (a copy: llama.cpp's next decode
    overwrites its outputs)."""
    out = array("f")
    out.frombytes(values.cast("B"))
    return out


def normalized(vector: FloatArray, norm: int) -> FloatArray:
    """common_embd_normalize, rounding where it rounds, so that the JSON is llama-server's to
    the byte. -1 none, 0 max absolute (to the int16 range), 2 Euclidean, else the p-norm."""
    n = len(vector)
    out = array("f", bytes(4 * n))
    if n:
        lib.llama_grpc_embd_normalize(ffi.from_buffer("float[]", vector),
                                      ffi.from_buffer("float[]", out), n, norm)
    return out


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def float32_bytes(vector: FloatArray) -> bytes:
    """The vector's values as little-endian float32s (a base64 embedding's bytes, the packed
    field's payload)."""
    if sys.byteorder == "little":
        return vector.tobytes()
    swapped = array("f", vector)
    swapped.byteswap()
    return swapped.tobytes()


def put_floats(message: Message, field: str, vector: FloatArray) -> None:
    """Append `vector` to `message`'s packed `repeated float` field named `field`."""
    number = message.DESCRIPTOR.fields_by_name[field].number
    data = float32_bytes(vector)
    message.MergeFromString(_varint(number << 3 | 2) + _varint(len(data)) + data)
