"""Server-Sent Events framing exactly as llama-server writes it: `data: <json>\\n\\n` per event,
`data: [DONE]\\n\\n` at the end of the OpenAI routes, `:\\n\\n` as keep-alive.

Pure (no web framework): the service's HTTP-body RPCs (service/rpc_http.py, served through
Envoy) frame their streams with these too, so both front doors write the same bytes."""

from __future__ import annotations

from rest_bridge.jsonio import Json, dumps

DONE = b"data: [DONE]\n\n"
KEEP_ALIVE = b":\n\n"


def frame(event: Json) -> bytes:
    return b"data: " + dumps(event) + b"\n\n"


def frames(events: list[Json]) -> bytes:
    return b"".join(b"data: " + dumps(e) + b"\n\n" for e in events)
