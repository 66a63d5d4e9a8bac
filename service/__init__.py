"""llama-grpc service: engine, gRPC servicer, configuration and CLI."""
