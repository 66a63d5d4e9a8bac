"""grpc's own socket polling for our server processes; importing this module chooses it, and
must come before anything imports grpc (grpc reads GRPC_EXPERIMENTS once, as it loads).

With grpc's EventEngine (its default for clients and servers), sockets are read on the
EventEngine's thread pool: one thread wakes on the socket, another reads it, and the result goes
through the completion queue to grpc.aio's poller thread, which then wakes the asyncio loop:
three thread hand-offs for every message received. With the EventEngine experiments off, grpc
polls with its older epoll code, and grpc.aio's poller thread reads the socket itself: one
hand-off. A request reaching the service and a first token reaching the REST bridge each wait
for those hand-offs (strace of one request: docs/benchmarks.md, "Transport and the REST
bridge").

A GRPC_EXPERIMENTS already in the environment wins, so
`GRPC_EXPERIMENTS=event_engine_client,event_engine_listener` gives grpc's defaults back. The
setting is inherited by child processes (the REST bridge `llama-grpc-server` starts), and it
does nothing once grpc is loaded.
"""

from __future__ import annotations

import os
import sys

ENV = "GRPC_EXPERIMENTS"
INLINE_POLLING = "-event_engine_client,-event_engine_listener"

if "grpc" not in sys.modules:
    os.environ.setdefault(ENV, INLINE_POLLING)
