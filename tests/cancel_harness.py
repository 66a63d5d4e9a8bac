"""Helpers of the cancellation tests (tests/test_cancellation.py, tests/rest/
test_rest_cancellation.py): a gRPC stream read on a thread of its own, so that a test can wait
for its messages and cancel it from the main thread; GetLoad polled until the engine reaches a
state (bounded by a deadline, never a fixed wait); the checks that a slot is free again and that
the next request is served normally.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import grpc
from google.protobuf import text_format
from grpc_harness import complete
from llama.v1 import server_pb2

DEADLINE_S = 30.0
"""How long a test waits for a state it expects; reaching it normally takes milliseconds."""
POLL_PACE_S = 0.005
"""Pause between two GetLoad polls, only so that polling does not hog the shared cores."""

ENDLESS: dict[str, Any] = {"n_predict": -1, "ignore_eos": True, "temperature": 0.0}
"""A generation that never ends by itself (the test servers run with --context-shift)."""


# -- GetLoad ----------------------------------------------------------------------------------
def get_load(stub: Any) -> Any:
    return stub.GetLoad(server_pb2.GetLoadRequest(), timeout=10)


def show(load: Any) -> str:
    return str(text_format.MessageToString(load, as_one_line=True))


def wait_load(stub: Any, cond: Callable[[Any], bool], what: str,
              timeout: float = DEADLINE_S) -> Any:
    """Poll GetLoad until `cond(load)` holds; that load. Fails after `timeout` with the last."""
    deadline = time.monotonic() + timeout
    while True:
        load = get_load(stub)
        if cond(load):
            return load
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout}s; last load: {show(load)}")
        time.sleep(POLL_PACE_S)


def slot(load: Any, slot_id: int) -> Any:
    found = [s for s in load.slots if s.id == slot_id]
    assert len(found) == 1, f"slot {slot_id} not in {show(load)}"
    return found[0]


def is_free(load: Any, slot_id: int) -> bool:
    """Nothing runs or waits, nothing is reserved, and slot `slot_id` holds no cells."""
    return (load.n_processing == 0 and load.n_waiting == 0
            and load.idle_slots == load.total_slots and load.kv_cells_reserved == 0
            and not any(s.busy for s in load.slots) and slot(load, slot_id).n_cells == 0)


def wait_free(stub: Any, slot_id: int = 0) -> Any:
    """Until the engine is idle and `slot_id`'s KV cells are freed (a cancelled request's)."""
    load = wait_load(stub, lambda ld: is_free(ld, slot_id),
                     f"engine idle with slot {slot_id} emptied")
    assert load.total_slots == len(load.slots)
    return load


def wait_processing(stub: Any, n_processing: int, n_waiting: int = 0) -> Any:
    return wait_load(stub, lambda ld: (ld.n_processing, ld.n_waiting) == (n_processing, n_waiting),
                     f"{n_processing} processing and {n_waiting} waiting")


def serve_next(stub: Any, slot_id: int = 0) -> Any:
    """A short request after a cancellation is served in full, and its slot keeps its prompt
    cached once it ended normally; the load after it."""
    r = complete(stub, timeout=DEADLINE_S, prompt="And now a short one", n_predict=4,
                 temperature=0.0)
    assert r.code == grpc.StatusCode.OK, r.details
    assert r.final.stop_type == "limit" and r.final.tokens_predicted == 4
    assert r.final.id_slot == slot_id
    load = wait_load(stub, lambda ld: ld.n_processing == 0 and not slot(ld, slot_id).busy,
                     "the short request ended")
    assert load.n_waiting == 0 and load.kv_cells_reserved == 0
    assert slot(load, slot_id).n_cells > 0, "a request that ended normally keeps its cache"
    return load


# -- streams read on a thread -----------------------------------------------------------------
class StreamReader:
    """Reads a server-streaming call on a daemon thread; the test waits for what it received."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.messages: list[Any] = []
        self.code: grpc.StatusCode | None = None  # set when the call ended
        self.details = ""
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        code, details = grpc.StatusCode.OK, ""
        try:
            for msg in self.call:
                with self._cond:
                    self.messages.append(msg)
                    self._cond.notify_all()
        except grpc.RpcError as e:
            code, details = e.code(), e.details() or ""
        with self._cond:
            self.code, self.details = code, details
            self._cond.notify_all()

    def wait_until(self, cond: Callable[[], bool], what: str,
                   timeout: float = DEADLINE_S) -> None:
        with self._cond:
            if not self._cond.wait_for(cond, timeout):
                raise AssertionError(f"{what}: not seen in {timeout}s; received "
                                     f"{len(self.messages)} messages, status {self.code}")

    def first(self) -> Any:
        """The first message (sent when the request is admitted into a slot)."""
        self.wait_until(lambda: bool(self.messages) or self.code is not None, "a first message")
        assert self.messages, f"the call ended with {self.code} before any message"
        return self.messages[0]

    def first_content(self) -> Any:
        """The first message carrying generated tokens."""
        self.wait_until(lambda: any(has_content(m) for m in self.messages)
                        or self.code is not None, "a content chunk")
        found = [m for m in self.messages if has_content(m)]
        assert found, f"the call ended with {self.code} before any content"
        return found[0]

    def end(self) -> grpc.StatusCode:
        """Until the call has ended; its status."""
        self.wait_until(lambda: self.code is not None, "the end of the call")
        self._thread.join(DEADLINE_S)
        assert self.code is not None
        return self.code

    def cancel(self) -> None:
        self.call.cancel()


def has_content(msg: Any) -> bool:
    return not msg.stop and (bool(msg.tokens) or bool(msg.content))


@contextmanager
def stream_readers() -> Iterator[Callable[[Any], StreamReader]]:
    """Gives `open(call) -> StreamReader`; on exit cancels every call still running, so that a
    failing test leaves no endless generation behind for the next one."""
    readers: list[StreamReader] = []

    def open_reader(call: Any) -> StreamReader:
        reader = StreamReader(call)
        readers.append(reader)
        return reader

    try:
        yield open_reader
    finally:
        for reader in readers:
            reader.cancel()  # a no-op on a call that has ended
        for reader in readers:
            reader.end()
