"""llama-server's embedding and rerank JSON from EmbedResponse, OpenAIEmbedResponse and
RerankResponse messages, keys in its order (its JSON objects keep insertion order).

Pure (no web framework): the bridge's routes (routes_embedding) and the service's HTTP-body
RPCs (service/rpc_http.py, through Envoy) both answer with these.

The embedding bodies are JSON text (bytes, which rest_bridge.jsonio.dumps passes as they are):
each vector is read from its message's wire form as float32s and written by float_array, the
rest of the body by jsonio.dumps.

float_array writes as llama-server does, fast. llama-server's JSON library (nlohmann json)
widens a float to a double and writes the shortest text that reads back as that double: up to
17 significant digits (-0.03448624536395073), the widened value's text, not float32's shortest
(-0.034486245). Python's float repr writes the same digits, but json.dumps spends ~1.5 us a
value in it: ~0.6 ms for one 384-value MiniLM vector, the largest part of a one-input
/v1/embeddings request in the bridge. orjson gives the same digits (both write the shortest,
then closest, text) ~25 times faster, in another notation for magnitudes below 1e-4 only:
0.000012345 and 1.2345e-6 where nlohmann json and Python write 1.2345e-05 and 1.2345e-06.
Those few values (about one in 600 of a normalized vector's) are written by repr and put in as
they are (orjson.Fragment). NaN and infinities become null, as jsonio.dumps and llama-server
write them."""

from __future__ import annotations

import base64
import sys
from array import array
from typing import Any, Protocol

import orjson
from google.protobuf.message import Message

from rest_bridge.jsonio import Json, dumps


class FloatValues(Protocol):
    """A float32 array (array.array "f", what packed_floats reads), or a numpy array."""

    def tolist(self) -> list[float]: ...


def native_json(resp: Any) -> bytes:
    """POST /embedding and /embeddings: a bare array, one embedding per token or pooled."""
    return b"[" + b",".join(
        b'{"index":%d,"embedding":[%b]}' % (r.index, b",".join(
            float_array(packed_floats(v, "values")) for v in r.embedding))
        for r in resp.results) + b"]"


def openai_embed_json(resp: Any) -> bytes:
    """POST /v1/embeddings (a base64 embedding where encoding_format asked for it)."""
    data: list[bytes] = []
    for e in resp.data:
        if e.HasField("embedding_base64"):
            data.append(dumps({"embedding": base64.b64encode(e.embedding_base64).decode("ascii"),
                               "index": e.index, "object": "embedding",
                               "encoding_format": "base64"}))
        else:
            data.append(b'{"embedding":%b,"index":%d,"object":"embedding"}'
                        % (float_array(packed_floats(e, "embedding")), e.index))
    head = dumps({"model": resp.model, "object": "list",
                  "usage": {"prompt_tokens": resp.usage.prompt_tokens,
                            "total_tokens": resp.usage.total_tokens}})
    return head[:-1] + b',"data":[' + b",".join(data) + b"]}"  # "data" last, in that object


def packed_floats(message: Message, field: str) -> array[float]:
    """The values of `message`'s `repeated float` field as a float32 array, read from the
    message's wire form (proto3 packs them: one run of little-endian floats), without the
    Python float per value that reading the field makes. No numpy: the service renders
    these bodies too (through Envoy), and numpy in its process slows libllama's CPU kernels
    ~3% (test_the_server_process_never_loads_numpy)."""
    number = message.DESCRIPTOR.fields_by_name[field].number
    wire = message.SerializeToString()
    runs: list[bytes] = []
    pos, end = 0, len(wire)
    while pos < end:
        key, pos = _varint(wire, pos)
        kind = key & 7
        if kind == 2:  # length-delimited: the packed run, or a string or message
            size, pos = _varint(wire, pos)
            if key >> 3 == number:
                runs.append(wire[pos:pos + size])
            pos += size
        elif kind == 5:  # 32-bit: an unpacked float (valid on the wire, not written so)
            if key >> 3 == number:
                runs.append(wire[pos:pos + 4])
            pos += 4
        elif kind == 0:
            pos = _varint(wire, pos)[1]
        elif kind == 1:
            pos += 8
        else:
            raise ValueError(f"unexpected wire type {kind} in {message.DESCRIPTOR.full_name}")
    values = array("f", b"".join(runs))
    if sys.byteorder != "little":
        values.byteswap()
    return values


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at data[pos:] and the position after it."""
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def wants_native(body: dict[str, Json]) -> bool:
    """llama-server answers /v1/embeddings in the native shape for a body with `content` and
    no `input` (not OpenAI's field)."""
    return "input" not in body and "content" in body


def rerank_json(resp: Any, body: dict[str, Json]) -> Json:
    """The Jina shape, or TEI's bare array when the request names its documents `texts`
    (as llama-server decides it)."""
    if "texts" in body:
        tei: list[Json] = []
        for r in resp.results:
            item: dict[str, Json] = {"index": r.index, "score": r.relevance_score}
            if r.HasField("text"):
                item["text"] = r.text
            tei.append(item)
        return tei
    return {
        "model": resp.model, "object": "list",
        "usage": {"prompt_tokens": resp.usage.prompt_tokens,
                  "total_tokens": resp.usage.total_tokens},
        "results": [{"index": r.index, "relevance_score": r.relevance_score}
                    for r in resp.results]}


# Below this magnitude orjson's notation is not nlohmann json's (and Python's repr's).
_SMALL = 1e-4


def float_array(values: FloatValues) -> bytes:
    """`values` as a compact JSON array of numbers (module docstring)."""
    floats = values.tolist()  # float32 widened, exactly
    items: list[Any] = floats  # the small ones replaced in place, by Fragments
    for i, x in enumerate(floats):
        if -_SMALL < x < _SMALL and x:  # false for NaN and 0.0 (written as they are)
            items[i] = orjson.Fragment(repr(x))
    return orjson.dumps(items)
