"""Slot RPCs: SlotAction (POST /slots/{id}?action=save|restore|erase, with --slot-save-path)
and our KV snapshots over gRPC, ExportSlot and ImportSlot (service.slot_files says what runs
where; service.slot_files_format, the bytes and their checks)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from llama.v1 import server_pb2, slot_state_pb2

from service.engine.params import ParamError
from service.errors import ServiceError
from service.rpc_base import Context, ServicerBase
from service.rpc_errors import abort, check_decoded, unary
from service.runtime import Runtime
from service.slot_files import (
    adapters_here,
    check_slot_id,
    erase,
    image_of,
    restore,
    slot_limits,
    snapshot,
)
from service.slot_files_format import (
    Limits,
    SlotFileError,
    check_filename,
    decode,
    encode,
    read_file,
    write_file,
)
from service.typed_inputs import slot_action_of

CHUNK_BYTES = 1 << 20
_NO_SAVE_PATH = ("This server does not support slots action. Start it with "
                 "`--slot-save-path`")


class SlotFileRpcs(ServicerBase):
    _slot_limits: tuple[Runtime, Limits] | None = None

    async def _limits(self, rt: Runtime) -> Limits:
        cached = self._slot_limits
        if cached is None or cached[0] is not rt:
            cached = (rt, await self._offload.run(slot_limits, rt))
            self._slot_limits = cached
        return cached[1]

    @unary
    async def SlotAction(self, request: Any, context: Context) -> Any:
        rt = self._rt()
        directory = rt.config.endpoints.slot_save_path
        if not directory:
            raise ServiceError("unimplemented", _NO_SAVE_PATH)
        action = slot_action_of(request)
        if action not in ("save", "restore", "erase"):
            raise ParamError("Invalid action: expected action=save, restore or erase")
        if action != "erase":
            check_filename(request.options.filename)
        check_slot_id(rt, request.id_slot)
        if action == "save":
            return await self._save(rt, directory, request.id_slot, request.options.filename)
        if action == "restore":
            return await self._restore_file(rt, directory, request.id_slot,
                                            request.options.filename)
        n = await asyncio.wrap_future(rt.engine.call(lambda: erase(rt.engine, request.id_slot)))
        return server_pb2.SlotActionResponse(id_slot=request.id_slot, n_erased=n)

    async def _snapshot_bytes(self, rt: Runtime, id_slot: int) -> tuple[int, bytes]:
        limits = await self._limits(rt)
        tokens, state, adapters = await asyncio.wrap_future(
            rt.engine.call(lambda: snapshot(rt.engine, id_slot)))
        data = await self._offload.run(
            lambda: encode(image_of(rt, tokens, state, adapters), limits.fingerprint))
        return len(tokens), data

    async def _save(self, rt: Runtime, directory: str, id_slot: int, name: str) -> Any:
        t0 = time.perf_counter()
        n_tokens, data = await self._snapshot_bytes(rt, id_slot)
        try:
            await self._offload.run(write_file, directory, name, data)
        except OSError as e:
            raise ServiceError("internal", f"Unable to save slot: {e.strerror or e}") from e
        resp = server_pb2.SlotActionResponse(id_slot=id_slot, filename=name, n_saved=n_tokens,
                                             n_written=len(data))
        resp.timings.save_ms = (time.perf_counter() - t0) * 1e3
        return resp

    async def _restore_file(self, rt: Runtime, directory: str, id_slot: int,
                            name: str) -> Any:
        t0 = time.perf_counter()
        limits = await self._limits(rt)
        data = await self._offload.run(read_file, directory, name, limits.max_bytes)
        n_tokens = await self._restore_bytes(rt, limits, id_slot, data)
        resp = server_pb2.SlotActionResponse(id_slot=id_slot, filename=name,
                                             n_restored=n_tokens, n_read=len(data))
        resp.timings.restore_ms = (time.perf_counter() - t0) * 1e3
        return resp

    async def _restore_bytes(self, rt: Runtime, limits: Limits, id_slot: int,
                             data: bytes, n_tokens: int | None = None) -> int:
        """Check the bytes (worker pool), then restore them on the engine thread."""
        image = await self._offload.run(decode, data, limits)
        if n_tokens is not None and n_tokens != len(image.tokens):
            raise SlotFileError(f"the first chunk declares {n_tokens} tokens; the snapshot "
                                f"holds {len(image.tokens)}")
        adapters = adapters_here(rt, image)
        await asyncio.wrap_future(rt.engine.call(
            lambda: restore(rt.engine, id_slot, image.tokens, image.state, adapters)))
        return len(image.tokens)

    # -- KV snapshots over gRPC ---------------------------------------------------------------
    async def ExportSlot(self, request: Any, context: Context) -> AsyncIterator[Any]:
        try:
            check_decoded(request)
            rt = self._rt()
            check_slot_id(rt, request.id_slot)
            n_tokens, data = await self._snapshot_bytes(rt, request.id_slot)
            for offset in range(0, max(len(data), 1), CHUNK_BYTES):
                chunk = slot_state_pb2.SlotStateChunk(
                    id_slot=request.id_slot, data=data[offset:offset + CHUNK_BYTES])
                if offset == 0:
                    chunk.total_bytes, chunk.n_tokens = len(data), n_tokens
                yield chunk
        except grpc.aio.AbortError:
            raise
        except Exception as e:  # mapped to a status: never UNKNOWN
            await abort(context, e)

    @unary
    async def ImportSlot(self, request: Any, context: Context) -> Any:
        rt = self._rt()
        limits = await self._limits(rt)
        t0 = time.perf_counter()
        id_slot, parts, size = -1, [], 0
        declared: tuple[int | None, int | None] = (None, None)
        async for chunk in request:
            check_decoded(chunk)
            if id_slot < 0:
                id_slot = chunk.id_slot
                check_slot_id(rt, id_slot)
                declared = (chunk.total_bytes if chunk.HasField("total_bytes") else None,
                            chunk.n_tokens if chunk.HasField("n_tokens") else None)
            size += len(chunk.data)
            if size > limits.max_bytes:
                raise SlotFileError(f"the snapshot is larger than a slot here can hold "
                                    f"({limits.max_bytes} bytes)")
            parts.append(chunk.data)
        if id_slot < 0:
            raise ParamError("ImportSlot needs at least one chunk (the first names id_slot)")
        data = b"".join(parts)
        _check_declared(declared, len(data))
        n_tokens = await self._restore_bytes(rt, limits, id_slot, data, declared[1])
        resp = slot_state_pb2.ImportSlotResponse(id_slot=id_slot, n_restored=n_tokens,
                                                 n_read=len(data))
        resp.timings.restore_ms = (time.perf_counter() - t0) * 1e3
        return resp


def _check_declared(declared: tuple[int | None, int | None], size: int) -> None:
    """An ImportSlot stream whose first chunk says its size (as ExportSlot's does) must have
    brought exactly that many bytes: a stream cut short is refused as such."""
    total = declared[0]
    if total is not None and total != size:
        raise SlotFileError(f"the stream brought {size} bytes; its first chunk declared {total}")
