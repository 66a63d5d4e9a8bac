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
    if n == 0 or data[-1] < 0x80:  # the usual token ends with ASCII: a whole character
        return 0
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
    word: str  # the stop string; "" for an indentation stop
    position: int  # byte offset where the output ends
    stop_type: str = "word"  # "word", or "limit" for an indentation stop (n_indent)


class TextStream:
    """Accumulates a generation's bytes and releases the text that is safe to send."""

    def __init__(self, stop: Sequence[str] = (), n_indent: int = 0) -> None:
        self._stops = [(s, s.encode("utf-8")) for s in stop if s]
        self._longest_stop = max((len(b) for _, b in self._stops), default=0)
        self._n_indent = n_indent
        self._indent_checked = 0  # bytes already checked for lines that are not indented enough
        self.data = bytearray()
        self.sent = 0  # bytes already released
        self.stopped: StopMatch | None = None

    def push(self, piece: bytes) -> str:
        """Add a token's bytes; returns newly releasable text ("" if everything is held)."""
        if self.stopped is not None:
            return ""
        if not self._stops and self._n_indent <= 0:  # the usual request: nothing can stop it
            self.data += piece
            return self._release(len(self.data) - incomplete_utf8_tail(self.data))
        start = max(self.sent, len(self.data) - self._longest_stop)
        self.data += piece
        match = self._find_stop(start)
        cut = self._find_short_indent()
        if cut is not None and (match is None or cut < match.position):
            match = StopMatch("", cut, "limit")
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
        chunk = self.data[self.sent:end]
        self.sent = end
        return chunk.decode("utf-8", "replace")

    def _find_stop(self, start: int) -> StopMatch | None:
        best: StopMatch | None = None
        for word, encoded in self._stops:
            pos = self.data.find(encoded, start)
            if pos >= 0 and (best is None or pos < best.position):
                best = StopMatch(word, pos)
        return best

    def _find_short_indent(self) -> int | None:
        """n_indent (as llama-server): after the first newline, a line whose first non-blank
        character comes after fewer than n_indent spaces/tabs ends the output right there."""
        if self._n_indent <= 0:
            return None
        data, i = self.data, self._indent_checked
        while True:
            nl = data.find(b"\n", i)
            if nl < 0:
                self._indent_checked = max(i, len(data) - 1) if data else 0
                return None
            pos = nl + 1
            while pos < len(data) and data[pos] in b" \t":
                pos += 1
            if pos == len(data):  # indentation not known yet: look again at the next piece
                self._indent_checked = nl
                return None
            if pos - nl - 1 < self._n_indent and data[pos] != 0x0A:
                return pos
            i = pos

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
