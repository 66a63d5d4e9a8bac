"""Tokenizer and template routes: POST /tokenize, /detokenize and /apply-template."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from llama.v1 import chat_pb2, tokenize_pb2
from starlette.responses import Response

from rest_bridge.deps import Up, body_object, metadata
from rest_bridge.generation import json_response
from rest_bridge.jsonio import Json, to_message

router = APIRouter()


def piece_json(p: Any) -> dict[str, Json]:
    """`{"id", "piece"}`; a piece that is not valid UTF-8 is the list of its byte values."""
    piece: Json = list(p.piece_bytes) if p.HasField("piece_bytes") else p.piece
    return {"id": p.id, "piece": piece}


@router.post("/tokenize")
async def tokenize(request: Request, up: Up) -> Response:
    req = to_message(await body_object(request), tokenize_pb2.TokenizeRequest())
    resp = await up.llama.Tokenize(req, metadata=metadata(request))
    if req.with_pieces:
        return json_response({"tokens": [piece_json(p) for p in resp.pieces]})
    return json_response({"tokens": list(resp.tokens)})


@router.post("/detokenize")
async def detokenize(request: Request, up: Up) -> Response:
    req = to_message(await body_object(request), tokenize_pb2.DetokenizeRequest())
    resp = await up.llama.Detokenize(req, metadata=metadata(request))
    return json_response({"content": resp.content})


@router.post("/apply-template")
async def apply_template(request: Request, up: Up) -> Response:
    req = to_message(await body_object(request), chat_pb2.ChatCompletionRequest())
    resp = await up.llama.ApplyTemplate(req, metadata=metadata(request))
    return json_response({"prompt": resp.prompt})
