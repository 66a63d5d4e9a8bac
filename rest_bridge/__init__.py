"""The REST bridge: llama-server's HTTP API (JSON and SSE) and its OpenAI-compatible routes,
served by FastAPI on top of the llama.v1 gRPC service. It holds no model and no engine state;
every request becomes one gRPC call. `create_app` builds the application."""

from rest_bridge.app import BridgeSettings, create_app

__all__ = ["BridgeSettings", "create_app"]
