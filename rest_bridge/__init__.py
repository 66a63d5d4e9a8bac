"""The REST bridge: llama-server's HTTP API (JSON and SSE) and its OpenAI-compatible routes,
served by FastAPI on top of the llama.v1 gRPC service. It holds no model and no engine state;
every request becomes one gRPC call. `rest_bridge.app.create_app` builds the application.

This package imports nothing itself: `llama-rest-bridge` and `llama-grpc-server` must be able
to set up grpc (rest_bridge.grpc_polling) before their first import loads it."""
