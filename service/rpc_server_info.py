"""GetServerInfo: the server's capabilities, typed (service.server_info builds the message,
service.server_features decides the feature names)."""

from __future__ import annotations

from typing import Any

from service.rpc_base import Context, ServicerBase
from service.rpc_errors import unary
from service.runtime import Runtime
from service.server_features import served_features
from service.server_info import server_info_response


class ServerInfoRpcs(ServicerBase):
    # Fixed for the life of a runtime, and listing the end-of-generation tokens walks the whole
    # vocabulary: built once per runtime, off the event loop.
    _server_info: tuple[Runtime, Any] | None = None

    @unary
    async def GetServerInfo(self, request: Any, context: Context) -> Any:
        rt = self._rt()
        cached = self._server_info
        if cached is None or cached[0] is not rt:
            features = served_features(type(self), rt)
            info = await self._offload.run(server_info_response, rt, self._build_info,
                                           features)
            cached = self._server_info = (rt, info)
        return cached[1]
