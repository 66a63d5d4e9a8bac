"""Embedding vectors as float32 arrays, from llama.cpp's output to the response message.

A vector never becomes one Python float per value on the service's side: it is copied out of
llama.cpp as a float32 array, normalized with numpy, and put into its `repeated float` field as
the field's wire bytes (a packed field is its little-endian float32 values as they are), which
protobuf's C parser copies in one piece. One Python float per value cost more than the rest of
the response (docs/benchmarks.md, "Embeddings and reranking").
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from google.protobuf.message import Message

# numpy is imported where it is used, not with the module: a server that computes no
# embeddings never loads it (numpy in the process slows libllama's CPU kernels ~3%:
# tests/test_grpc_server.py, test_the_server_process_never_loads_numpy).
if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float32]

# The packed wire form is little-endian (a big-endian host's floats are swapped first).
_WIRE_FLOAT = "<f4"


def normalized(vector: FloatArray, norm: int) -> FloatArray:
    """common_embd_normalize, rounding where it rounds, so that the JSON is llama-server's to
    the byte: float32 squares summed one after another in a double, a float32 scale, float32
    products. -1 none, 0 max absolute (to the int16 range), 2 Euclidean, else the p-norm."""
    import numpy as np

    if norm == -1:
        total = 1.0
    elif norm == 0:
        # fmax skips NaN as llama.cpp's `sum < abs(x)` does
        total = float(np.fmax.reduce(np.abs(vector), initial=0.0)) / 32760.0
    elif norm == 2:
        with np.errstate(over="ignore"):  # inf, as in C, without numpy's warning
            squares = vector * vector  # float32 products
        # cumsum adds in order (np.sum pairs its terms: another rounding)
        total = float(np.sqrt(np.cumsum(squares, dtype=np.float64)[-1])) if len(vector) else 0.0
    else:
        total = _p_norm(vector.tolist(), norm)
    scale = np.float32(1.0 / total if total > 0 else 0.0)
    out: FloatArray = vector * scale
    return out


def _p_norm(values: list[float], p: int) -> float:
    """std::pow in doubles, summed in order (a rare norm: Python's pow, which is C's); a power
    beyond the double range is inf there, where Python raises."""
    total = 0.0
    for v in values:
        try:
            total += abs(v) ** p
        except OverflowError:
            total = math.inf
    return float(total ** (1.0 / p))


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
    return vector.astype(_WIRE_FLOAT, copy=False).tobytes()


def put_floats(message: Message, field: str, vector: FloatArray) -> None:
    """Append `vector` to `message`'s packed `repeated float` field named `field`."""
    number = message.DESCRIPTOR.fields_by_name[field].number
    data = float32_bytes(vector)
    message.MergeFromString(_varint(number << 3 | 2) + _varint(len(data)) + data)
