"""Benchmark of llama-grpc against llama-server built from the same pinned llama.cpp source."""
