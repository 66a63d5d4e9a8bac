"""Request checks llama-server makes on the JSON itself, before any typed message exists.

Pure (no web framework): the REST bridge and the service's HTTP-body RPCs (service/rpc_http.py)
both run them, with the same messages."""

from __future__ import annotations

import re

from rest_bridge.errors import BridgeError
from rest_bridge.jsonio import Json


def check_input_extra(body: dict[str, Json]) -> None:
    """llama-server's own checks of `input_extra`, with its messages: a missing `text` is an
    error there, where the typed message could only take it as empty."""
    extra = body.get("input_extra", [])
    if not isinstance(extra, list):
        raise BridgeError.invalid_request(
            '"input_extra" must be an array of {"filename": string, "text": string}')
    for chunk in extra:
        if not isinstance(chunk, dict) or not isinstance(chunk.get("text"), str):
            raise BridgeError.invalid_request(
                'extra_context chunk must contain a "text" field with a string value')
        if "filename" in chunk and not isinstance(chunk["filename"], str):
            raise BridgeError.invalid_request(
                'extra_context chunk\'s "filename" field must be a string')


INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
# What the bridge's FastAPI routes took as a path's integer (pydantic's lax parsing of text):
# an optional sign, digits with single underscores between them, a zero fraction, whitespace.
_PATH_INT = re.compile(r"\s*[+-]?[0-9]+(?:_[0-9]+)*(?:\.0+)?\s*", re.ASCII)


def path_slot_id(text: str) -> int:
    """The `{id_slot}` of /slots/{id_slot} and /slots/{id_slot}/export as an int32, refused with
    the words FastAPI's validation gave these routes (a larger number is a 400, as llama-server's
    stoi refuses it), so that both front doors say the same."""
    if not _PATH_INT.fullmatch(text):
        raise BridgeError.invalid_request(
            "path.id_slot: Input should be a valid integer, unable to parse string as an integer")
    value = int(text.strip().partition(".")[0])
    if value > INT32_MAX:
        raise BridgeError.invalid_request(
            f"path.id_slot: Input should be less than or equal to {INT32_MAX}")
    if value < INT32_MIN:
        raise BridgeError.invalid_request(
            f"path.id_slot: Input should be greater than or equal to {INT32_MIN}")
    return value


def query_slot_id(text: str | None) -> int:
    """POST /slots/import's `?id_slot=` (absent: slot 0) as an int32."""
    if text is None:
        return 0
    try:
        value = int(text)
    except ValueError:
        raise BridgeError.invalid_request("id_slot must be an integer") from None
    if not INT32_MIN <= value <= INT32_MAX:
        raise BridgeError.invalid_request(
            f"id_slot must be between {INT32_MIN} and {INT32_MAX}")
    return value
