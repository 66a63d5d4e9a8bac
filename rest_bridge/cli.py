"""`llama-rest-bridge`: llama-server's HTTP API in front of a llama.v1 gRPC service.

    llama-rest-bridge --grpc-target HOST:PORT [--host 127.0.0.1] [--port 8080] [--api-key KEY]

`llama-grpc-server` starts this same program as a child process (see rest_bridge.launcher):
it then passes the API keys on stdin (never on the command line, where `ps` shows them) and
keeps stdin open; the bridge exits when it closes, so it never outlives the server.
"""

from __future__ import annotations

from rest_bridge import grpc_polling  # noqa: F401  first: it must come before grpc loads

# isort: split
import argparse
import json
import logging
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import grpc
import uvicorn

from rest_bridge.app import CorsSettings, create_app
from rest_bridge.deps import DEFAULT_MAX_BODY_BYTES

_log = logging.getLogger("llama-rest-bridge")


def _parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="llama-rest-bridge", description=__doc__.split("\n")[0])
    p.add_argument("--grpc-target", default=env("LLAMA_GRPC_TARGET"),
                   help="HOST:PORT of the llama.v1 gRPC service (env LLAMA_GRPC_TARGET)")
    p.add_argument("--host", default=env("LLAMA_ARG_HOST", "127.0.0.1"),
                   help="addresses to listen on, comma-separated; a UNIX socket path ends in "
                        ".sock")
    p.add_argument("--port", type=int, default=int(env("LLAMA_ARG_PORT", "8080")))
    p.add_argument("--api-key", action="append", default=[],
                   help="API key(s), comma-separated; repeatable (env LLAMA_API_KEY)")
    p.add_argument("--api-key-file", action="append", default=[],
                   help="file of API keys, one per line ('#' starts a comment)")
    p.add_argument("--api-prefix", default=env("LLAMA_ARG_API_PREFIX", ""))
    p.add_argument("--sse-ping-interval", type=float,
                   default=float(env("LLAMA_ARG_SSE_PING_INTERVAL", "30")),
                   help="seconds of silence before an SSE keep-alive (<= 0: never)")
    p.add_argument("--ssl-key-file", help="serve HTTPS with this PEM key")
    p.add_argument("--ssl-cert-file", help="serve HTTPS with this PEM certificate")
    p.add_argument("--grpc-tls", action="store_true",
                   help="reach the gRPC service over TLS (system roots unless --grpc-ca-file)")
    p.add_argument("--grpc-ca-file", help="PEM roots to verify the gRPC service (implies TLS)")
    p.add_argument("--cors-origins", default="*")
    p.add_argument("--cors-methods", default="GET, POST, DELETE, OPTIONS")
    p.add_argument("--cors-headers", default="*")
    p.add_argument("--no-cors-credentials", action="store_true")
    p.add_argument("--no-webui", "--no-ui", dest="webui", action="store_false",
                   help="serve no web page at / (it answers 404)")
    p.add_argument("--path", dest="static_path", default=env("LLAMA_ARG_STATIC_PATH"),
                   help="serve this directory's static files at / instead of the web page")
    p.add_argument("--verbose", action="store_true", help="log every request")
    p.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                   help="largest request body read; a larger one is a 413 (ours)")
    p.add_argument("--keys-from-parent", action="store_true", help=argparse.SUPPRESS)
    return p


def _keys_from_files(paths: Sequence[str]) -> list[str]:
    keys: list[str] = []
    for path in paths:
        for line in Path(path).read_text().splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                keys.append(line)
    return keys


def _api_keys(args: argparse.Namespace) -> tuple[str, ...]:
    given = args.api_key or [os.environ.get("LLAMA_API_KEY", "")]
    keys = [k.strip() for arg in given for k in arg.split(",") if k.strip()]
    keys += _keys_from_files(args.api_key_file)
    return tuple(dict.fromkeys(keys))


def _keys_from_parent() -> list[str]:
    # First line of stdin: {"api_keys": [...]}, written by rest_bridge.launcher.
    line = sys.stdin.buffer.readline()
    data = json.loads(line) if line.strip() else {}
    keys = data.get("api_keys", []) if isinstance(data, dict) else []
    return [str(k) for k in keys]


def _exit_with_parent(server: uvicorn.Server) -> None:
    # The parent holds our stdin open for as long as it lives; EOF means it is gone.
    def watch() -> None:
        sys.stdin.buffer.read()
        server.should_exit = True

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    if args.grpc_ca_file:
        return grpc.ssl_channel_credentials(Path(args.grpc_ca_file).read_bytes())
    return grpc.ssl_channel_credentials() if args.grpc_tls else None


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname).1s %(name)s: %(message)s")
    if not args.grpc_target:
        print("llama-rest-bridge: error: --grpc-target HOST:PORT is required", file=sys.stderr)
        return 2
    keys = _api_keys(args)
    if args.keys_from_parent:
        keys = tuple(dict.fromkeys([*keys, *_keys_from_parent()]))
    args.static_path = args.static_path or None  # llama-server's default is "": none
    if args.static_path is not None and not Path(args.static_path).is_dir():
        print(f"llama-rest-bridge: error: --path: not a directory: {args.static_path}",
              file=sys.stderr)
        return 2
    cors = CorsSettings(args.cors_origins, args.cors_methods, args.cors_headers,
                        not args.no_cors_credentials)
    app = create_app(args.grpc_target, keys, api_prefix=args.api_prefix,
                     sse_ping_interval=args.sse_ping_interval, cors=cors,
                     grpc_credentials=_credentials(args), webui=args.webui,
                     static_path=args.static_path, max_body_bytes=args.max_body_bytes)
    hosts = [h.strip() for h in args.host.split(",") if h.strip()] or ["127.0.0.1"]
    configs = [uvicorn.Config(
        app, host="" if h.endswith(".sock") else h, port=args.port,
        uds=h if h.endswith(".sock") else None, ssl_keyfile=args.ssl_key_file,
        ssl_certfile=args.ssl_cert_file, log_config=None, access_log=args.verbose,
        lifespan="on", timeout_graceful_shutdown=5) for h in hosts]
    server = uvicorn.Server(configs[0])
    # Every --host, as llama-server: one server, a listening socket each (uvicorn logs why
    # one cannot be bound and exits).
    sockets = [c.bind_socket() for c in configs]
    if args.keys_from_parent:
        _exit_with_parent(server)
    _log.info("REST on %s, gRPC service at %s%s",
              ", ".join(h if h.endswith(".sock") else f"{h}:{args.port}" for h in hosts),
              args.grpc_target, f", {len(keys)} API key(s)" if keys else "")
    try:
        server.run(sockets=sockets)
    finally:
        for h in hosts[1:]:  # uvicorn removes the first one's socket file only
            if h.endswith(".sock"):
                Path(h).unlink(missing_ok=True)
    return 0 if server.started else 1


if __name__ == "__main__":
    raise SystemExit(main())
