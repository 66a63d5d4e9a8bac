"""Turns generated token pieces into streamable text: never half a UTF-8 character, never any part
of a stop string. Pure logic, no model.

Text that could still become a stop string is held back until it no longer can; a matched stop
string is cut off together with everything after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def incomplete_utf8_tail(data: bytes | bytearray) -> int:
    """How many bytes at the end of `data` start a UTF-8 character that is not complete yet."""
    n = len(data)
    for back in range(1, min(4, n) + 1):
        b = data[n - back]
        if b & 0xC0 == 0x80:  # continuation byte: keep looking for the lead byte
            continue
        if b >= 0xF0:
            need = 4
        elif b >= 0xE0:
            need = 3
        elif b >= 0xC0:
            need = 2
        else:
            need = 1
        return back if back < need else 0
    return 0


@dataclass(frozen=True)
class StopMatch:
    word: str
    position: int  # byte offset where the stop string starts


class TextStream:
    """Accumulates a generation's bytes and releases the text that is safe to send."""

    def __init__(self, stop: Sequence[str] = ()) -> None:
        self._stops = [(s, s.encode("utf-8")) for s in stop if s]
        self.data = bytearray()
        self.sent = 0  # bytes already released
        self.stopped: StopMatch | None = None

    def push(self, piece: bytes) -> str:
        """Add a token's bytes; returns newly releasable text ("" if everything is held)."""
        if self.stopped is not None:
            return ""
        start = max(self.sent, len(self.data) - max((len(b) for _, b in self._stops), default=0))
        self.data += piece
        match = self._find_stop(start)
        if match is not None:
            self.stopped = match
            return self._release(match.position)
        end = len(self.data) - max(incomplete_utf8_tail(self.data), self._partial_stop_len())
        return self._release(end)

    def flush(self) -> str:
        """At the end of a generation: release what was held (not past a matched stop string)."""
        end = self.stopped.position if self.stopped else len(self.data)
        return self._release(end)

    @property
    def text(self) -> str:
        """The whole generated text so far, stop string excluded."""
        end = self.stopped.position if self.stopped else len(self.data)
        return bytes(self.data[:end]).decode("utf-8", "replace")

    def _release(self, end: int) -> str:
        # `end` never splits a character of valid UTF-8; bytes that are not UTF-8 at all (a
        # random model can emit them) become U+FFFD rather than an error.
        if end <= self.sent:
            return ""
        chunk = bytes(self.data[self.sent:end])
        self.sent = end
        return chunk.decode("utf-8", "replace")

    def _find_stop(self, start: int) -> StopMatch | None:
        best: StopMatch | None = None
        for word, encoded in self._stops:
            pos = self.data.find(encoded, start)
            if pos >= 0 and (best is None or pos < best.position):
                best = StopMatch(word, pos)
        return best

    def _partial_stop_len(self) -> int:
        """Length of the longest suffix (after `sent`) that begins some stop string."""
        avail = len(self.data) - self.sent
        longest = 0
        for _, encoded in self._stops:
            for n in range(min(len(encoded) - 1, avail), longest, -1):
                if self.data.endswith(encoded[:n]):
                    longest = n
                    break
        return longest
