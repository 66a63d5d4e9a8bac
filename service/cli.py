"""`llama-grpc-server`: llama-server's command line, serving the llama.v1 gRPC API on
--grpc-port and, through the REST bridge in a child process, llama-server's HTTP API on
--host/--port.

Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT drain running requests first, see
--drain-timeout), 1 if the model cannot be loaded, 2 for bad flags.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from native import paths  # first: `native` loads libllama before numpy or grpc (see there)
from rest_bridge import grpc_polling  # noqa: F401  before grpc loads; the bridge inherits it

# isort: split
from rest_bridge.launcher import start_bridge
from service import event_loop, soak_probe
from service.config import LogConfig, ServerConfig, parse_args
from service.server import ServerHandle, start_server

_log = logging.getLogger("llama-grpc-server")
# EX_SOFTWARE: the engine thread failed; not 0, so that a supervisor restarts the server.
ENGINE_FAILED_EXIT = 70


def setup_logging(cfg: LogConfig) -> None:
    if cfg.disabled:
        logging.disable(logging.CRITICAL)
        return
    # llama.cpp's verbosity 0..5 (default 3 = info); its own chatter is one level quieter.
    level = logging.DEBUG if cfg.verbosity >= 4 else logging.INFO if cfg.verbosity >= 3 \
        else logging.WARNING
    fmt = "%(asctime)s %(levelname).1s %(name)s: %(message)s" if cfg.timestamps \
        else "%(levelname).1s %(name)s: %(message)s"
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if cfg.file:
        handlers.append(logging.FileHandler(cfg.file))
    logging.basicConfig(level=level, format=fmt, handlers=handlers, force=True)
    logging.getLogger("llama.cpp").setLevel(logging.DEBUG if cfg.verbosity >= 5
                                            else logging.WARNING)


async def serve(config: ServerConfig) -> int:
    build_info = f"llama.cpp from llama-cpp-python {paths.LLAMA_CPP_PYTHON_VERSION}"
    handle = await start_server(config, build_info=build_info)
    # REST runs in its own process, away from the engine thread's GIL (docs/rest.md).
    bridge = await start_bridge(config.net, handle.port, verbose=config.log.verbosity >= 4,
                                max_body_bytes=config.limits.max_body_bytes)
    try:
        return await _serve_until_stopped(config, handle)
    finally:
        await bridge.stop()


async def _serve_until_stopped(config: ServerConfig, handle: ServerHandle) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    waiter = asyncio.ensure_future(stop.wait())
    loaded = asyncio.ensure_future(handle.loaded.wait())
    await asyncio.wait([waiter, loaded], return_when=asyncio.FIRST_COMPLETED)
    if handle.load_error is not None:
        await handle.stop(0)
        return 1
    if not stop.is_set():
        _log.info("server is ready: gRPC on port %d", handle.port)
        engine_failed = _watch_engine(handle, loop)
        either: list[asyncio.Future[Any]] = [waiter, engine_failed]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if engine_failed.done():
            _log.critical("exiting with status %d: the engine thread stopped (its requests "
                          "failed); a supervisor should restart the server", ENGINE_FAILED_EXIT)
            loaded.cancel()
            await handle.stop(grace=1.0)
            return ENGINE_FAILED_EXIT
        engine_failed.cancel()
    _log.info("shutting down: NOT_SERVING, draining for at most %gs", config.net.drain_timeout)
    loaded.cancel()
    await handle.drain(config.net.drain_timeout)
    return 0


def _watch_engine(handle: ServerHandle, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
    """Done when the engine thread stops after an unexpected error (Engine.on_fatal)."""
    failed: asyncio.Future[None] = loop.create_future()

    def on_fatal(_exc: BaseException) -> None:
        def settle() -> None:
            if not failed.done():
                failed.set_result(None)

        loop.call_soon_threadsafe(settle)

    engine = handle.runtime.engine if handle.runtime is not None else None
    if engine is not None:
        engine.on_fatal = on_fatal
        if engine.fatal is not None:  # it died before the hook was in place
            on_fatal(engine.fatal)
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    config = parse_args(argv)
    setup_logging(config.log)
    soak_probe.start_from_env()  # bench/soak.py's sampler; nothing unless its variable is set
    if not config.model.path:
        print("llama-grpc-server: error: no model given; pass -m path/to/model.gguf",
              file=sys.stderr)
        return 2
    try:
        event_loop.chosen()
    except ValueError as e:
        print(f"llama-grpc-server: error: {e}", file=sys.stderr)
        return 2
    return event_loop.run(serve(config))


if __name__ == "__main__":
    raise SystemExit(main())
