"""Copy a tokenizer, byte for byte, from one of llama.cpp's vocab-only GGUF files into a new model.

Every `tokenizer.*` key is carried over with its exact GGUF value type; strings are kept as raw
bytes so nothing is re-encoded on the way.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf

TOKENIZER_PREFIX = "tokenizer."


@dataclass(frozen=True)
class MetadataField:
    """One GGUF key/value as stored: its value type, element type for arrays, and the value.

    Strings are `bytes`; arrays are tuples of bytes or numbers.
    """

    key: str
    value_type: gguf.GGUFValueType
    element_type: gguf.GGUFValueType | None
    value: Any


def _raw_value(field: Any) -> Any:
    types = field.types
    if types[0] == gguf.GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]])
    if types[0] != gguf.GGUFValueType.ARRAY:
        return field.contents()
    if types[1] == gguf.GGUFValueType.STRING:
        return tuple(bytes(field.parts[i]) for i in field.data)
    if types[1] == gguf.GGUFValueType.ARRAY:
        raise ValueError(f"{field.name}: nested arrays are not expected in a tokenizer")
    return tuple(field.contents())


def read_fields(reader: Any, prefix: str) -> tuple[MetadataField, ...]:
    """The key/values of an open GGUFReader whose key starts with `prefix`, in file order."""
    out = []
    for key, field in reader.fields.items():
        if not key.startswith(prefix):
            continue
        element_type = field.types[1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        out.append(MetadataField(key, field.types[0], element_type, _raw_value(field)))
    return tuple(out)


@functools.cache
def read_tokenizer_fields(vocab_path: Path) -> tuple[MetadataField, ...]:
    """All `tokenizer.*` fields of a vocab GGUF, cached: GGUFReader takes seconds on 128k tokens."""
    return read_fields(gguf.GGUFReader(vocab_path), TOKENIZER_PREFIX)


def add_fields(writer: Any, fields: tuple[MetadataField, ...]) -> None:
    """Add `fields` to a GGUFWriter with their original value types."""
    for field in fields:
        value = list(field.value) if field.element_type is not None else field.value
        writer.add_key_value(field.key, value, field.value_type, sub_type=field.element_type)
