"""The bridge's OpenAPI 3.1 document: every route the app serves, with its request body
described by the llama.v1 message the bridge parses it into (as json_format.ParseDict reads it:
proto field names, integers within their type, enums by name, google.protobuf.Value as any
JSON), and every answer's shapes: the route's JSON, or llama-server's error object.

The routes still read raw bodies (rest_bridge.protoparse keeps llama-server's leniency): this
document only describes them, for generators such as schemathesis (tests/test_fuzz_rest.py) and
for users' client generators. The bridge does not serve it (its URL surface is llama-server's);
`python -m rest_bridge.openapi` prints it.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from llama.v1 import chat_pb2, completion_pb2, embedding_pb2, server_pb2, tokenize_pb2
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount, Route

Schema = dict[str, Any]

# The body each POST route parses into. A `(wrapper, field)` pair: the body is that field of the
# message (the bridge wraps it as {"field": body}).
_BODIES: dict[str, tuple[Descriptor, str | None]] = {
    "/completion": (completion_pb2.CompletionRequest.DESCRIPTOR, None),
    "/completions": (completion_pb2.CompletionRequest.DESCRIPTOR, None),
    "/infill": (completion_pb2.CompletionRequest.DESCRIPTOR, None),
    "/v1/completions": (completion_pb2.CompletionRequest.DESCRIPTOR, None),
    "/v1/chat/completions": (chat_pb2.ChatCompletionRequest.DESCRIPTOR, None),
    "/chat/completions": (chat_pb2.ChatCompletionRequest.DESCRIPTOR, None),
    "/apply-template": (chat_pb2.ChatCompletionRequest.DESCRIPTOR, None),
    "/tokenize": (tokenize_pb2.TokenizeRequest.DESCRIPTOR, None),
    "/detokenize": (tokenize_pb2.DetokenizeRequest.DESCRIPTOR, None),
    "/embedding": (embedding_pb2.EmbedRequest.DESCRIPTOR, None),
    "/embeddings": (embedding_pb2.EmbedRequest.DESCRIPTOR, None),
    "/v1/embeddings": (embedding_pb2.EmbedRequest.DESCRIPTOR, None),
    "/reranking": (embedding_pb2.RerankRequest.DESCRIPTOR, None),
    "/rerank": (embedding_pb2.RerankRequest.DESCRIPTOR, None),
    "/v1/rerank": (embedding_pb2.RerankRequest.DESCRIPTOR, None),
    "/v1/reranking": (embedding_pb2.RerankRequest.DESCRIPTOR, None),
    "/props": (server_pb2.SetPropsRequest.DESCRIPTOR, "props"),
    "/slots/{id_slot}": (server_pb2.SlotActionRequest.DESCRIPTOR, "options"),
    "/lora-adapters": (server_pb2.SetLoraAdaptersRequest.DESCRIPTOR, "adapters"),
    "/cancel": (server_pb2.CancelRequest.DESCRIPTOR, None),
    "/v1/chat/completions/control": (chat_pb2.ControlChatCompletionRequest.DESCRIPTOR, None),
}
_QUERY: dict[tuple[str, str], list[Schema]] = {
    ("post", "/slots/{id_slot}"): [{"name": "action", "in": "query", "required": True,
                                    "schema": {"type": "string",
                                               "enum": ["save", "restore", "erase"]}}],
    ("get", "/slots"): [{"name": "fail_on_no_slot", "in": "query", "required": False,
                         "schema": {"type": "string"}}],
}
# Routes whose answers are not JSON.
_MEDIA: dict[str, str] = {"/metrics": "text/plain", "/slots/{id_slot}/export":
                          "application/octet-stream"}
_STREAMING = frozenset(p for p, (d, _) in _BODIES.items()
                       if d.name in ("CompletionRequest", "ChatCompletionRequest")
                       and p != "/apply-template")

ERROR_SCHEMA: Schema = {
    "type": "object", "required": ["error"],
    "properties": {"error": {
        "type": "object", "required": ["code", "message", "type"],
        "properties": {"code": {"type": "integer"}, "message": {"type": "string"},
                       "type": {"type": "string"}}}},
}
_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_WELL_KNOWN: dict[str, Schema] = {
    "google.protobuf.Value": {},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.ListValue": {"type": "array"},
}


class _Components:
    """Message schemas by full name, under #/components/schemas (recursion is a $ref)."""

    def __init__(self) -> None:
        self.schemas: dict[str, Schema] = {}

    def ref(self, d: Descriptor) -> Schema:
        if d.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[d.full_name])
        if d.full_name not in self.schemas:
            self.schemas[d.full_name] = {}  # placeholder: a field may refer back to it
            self.schemas[d.full_name] = self._message(d)
        return {"$ref": f"#/components/schemas/{d.full_name}"}

    def _message(self, d: Descriptor) -> Schema:
        props = {f.name: self.field(f) for f in d.fields}
        return {"type": "object", "properties": props}

    def field(self, f: FieldDescriptor) -> Schema:
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            value = f.message_type.fields_by_name["value"]
            return {"type": "object", "additionalProperties": self.scalar(value)}
        one = self.scalar(f)
        return {"type": "array", "items": one} if _repeated(f) else one

    def scalar(self, f: FieldDescriptor) -> Schema:
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            return self.ref(f.message_type)
        if f.type == FieldDescriptor.TYPE_ENUM:
            return {"type": "string", "enum": [v.name for v in f.enum_type.values]}
        if f.type == FieldDescriptor.TYPE_BOOL:
            return {"type": "boolean"}
        if f.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
            fmt = {"format": "byte"} if f.type == FieldDescriptor.TYPE_BYTES else {}
            return {"type": "string", **fmt}
        if f.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
            return {"type": "number"}
        low, high = _INT_RANGES[f.type]
        return {"type": "integer", "minimum": low, "maximum": high}


def _repeated(f: FieldDescriptor) -> bool:
    # protobuf >= 5.28 has is_repeated; label is the older spelling, gone in 7
    if hasattr(f, "is_repeated"):
        return bool(f.is_repeated)
    return bool(f.label == FieldDescriptor.LABEL_REPEATED)


def _body_schema(components: _Components, path: str) -> Schema:
    d, wrapped = _BODIES[path]
    if wrapped is None:
        return components.ref(d)
    return components.field(d.fields_by_name[wrapped])


def _responses(path: str, method: str) -> dict[str, Any]:
    media = _MEDIA.get(path, "application/json")
    ok: dict[str, Any] = {media: {"schema": {}}}
    if method == "post" and path in _STREAMING:
        ok["text/event-stream"] = {"schema": {"type": "string"}}
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {
        "200": {"description": "the route's answer, as llama-server writes it", "content": ok},
        "4XX": {"description": "a bad request, in llama-server's error shape",
                "content": error},
        "501": {"description": "a feature this server does not serve", "content": error},
        "503": {"description": "loading, draining or unavailable", "content": error},
    }


def _operation(components: _Components, path: str, method: str) -> Schema:
    op: Schema = {"operationId": f"{method}_{path}", "responses": _responses(path, method)}
    params = list(_QUERY.get((method, path), []))
    if "{id_slot}" in path:
        params.append({"name": "id_slot", "in": "path", "required": True,
                       "schema": {"type": "integer", "minimum": -(2**31),
                                  "maximum": 2**31 - 1}})
    if params:
        op["parameters"] = params
    if method == "post" and path == "/slots/import":
        op["requestBody"] = {"required": True, "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}
    elif method == "post" and path in _BODIES:
        op["requestBody"] = {"required": path not in ("/cancel",), "content": {
            "application/json": {"schema": _body_schema(components, path)}}}
    return op


def _routes(routes: list[BaseRoute], prefix: str = "") -> list[tuple[str, set[str]]]:
    out: list[tuple[str, set[str]]] = []
    for route in routes:
        if isinstance(route, Route):
            out.append((prefix + route.path, set(route.methods or ()) - {"HEAD"}))
        elif isinstance(route, Mount):
            out.extend(_routes(list(route.routes), prefix + route.path))
        else:  # FastAPI's included routers keep theirs on the router included
            original = getattr(route, "original_router", None)
            context = getattr(route, "include_context", None)
            if original is not None:
                out.extend(_routes(list(original.routes),
                                   prefix + getattr(context, "prefix", "")))
    return out


def openapi_document(app: Starlette, prefix: str = "") -> Schema:
    """The OpenAPI 3.1 document of `app`'s routes (served under `prefix`)."""
    components = _Components()
    paths: dict[str, dict[str, Schema]] = {}
    for path, methods in _routes(list(app.routes)):
        bare = path[len(prefix):] if prefix and path.startswith(prefix) else path
        for method in sorted(m.lower() for m in methods):
            paths.setdefault(path, {})[method] = _operation(components, bare, method)
    schemas = {"Error": ERROR_SCHEMA, **components.schemas}
    return {"openapi": "3.1.0",
            "info": {"title": "llama-grpc REST bridge (llama-server's HTTP API)",
                     "version": "1"},
            "paths": paths, "components": {"schemas": schemas}}


def main() -> None:
    from rest_bridge.app import create_app  # here: app imports every route module

    json.dump(openapi_document(create_app("127.0.0.1:0")), sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
