"""Request checks llama-server makes on the JSON itself, before any typed message exists.

Pure (no web framework): the REST bridge and the service's HTTP-body RPCs (service/rpc_http.py)
both run them, with the same messages."""

from __future__ import annotations

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
