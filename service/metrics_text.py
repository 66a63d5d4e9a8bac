"""Prometheus text for families whose shape (names, labels, sample order) stays put while their
values change: what GET /metrics writes on every scrape.

prometheus-client's generate_latest formats every sample line anew (escaping the name, sorting
and escaping the labels) and needs the metric family objects built first: about 0.4 ms of the
server's CPU a scrape for our ~90 samples, on the event loop, holding the GIL the engine thread
needs between decodes. A `TextTemplate` has prometheus-client render the families once and keeps
the text around each value; a scrape then writes only the values, with prometheus-client's own
float formatting (floatToGoString), so the bytes are those generate_latest writes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

_fmt: Callable[[float], str] = floatToGoString  # untyped in prometheus-client

# The most values a template keeps the text of (then it starts over): a few scrapes' worth.
_MEMO_SIZE = 1024
_ZERO = _fmt(0.0)

# OpenMetrics-only samples, which generate_latest moves after the others: not supported here.
_MOVED_SUFFIXES = ("_created", "_gsum", "_gcount")


class _Fixed(Collector):
    def __init__(self, families: Sequence[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterable[Metric]:
        return list(self.families)


def sample_values(families: Iterable[Metric]) -> list[float]:
    """The families' sample values in the order the text writes them."""
    return [s.value for f in families for s in f.samples]


class TextTemplate:
    """The text of `families` with each sample's value left open; `render` fills them in."""

    __slots__ = ("_chunks", "_memo", "_tail", "size")

    def __init__(self, families: Sequence[Metric]) -> None:
        for f in families:
            for s in f.samples:
                if s.timestamp is not None or s.name.endswith(_MOVED_SUFFIXES):
                    raise ValueError(f"{s.name}: a sample this template cannot place")
        text = generate_latest(_Fixed(families)).decode()
        chunks: list[str] = []
        pending = ""  # the text since the previous sample's value
        written: list[str] = []
        for line in text.splitlines(keepends=True):
            if line.startswith("#"):
                pending += line
                continue
            head, _, value = line.rpartition(" ")
            chunks.append(pending + head + " ")
            written.append(value.rstrip("\n"))
            pending = "\n"
        expected = [_fmt(v) for v in sample_values(families)]
        if written != expected:  # the order of the samples is not the order of the text
            raise ValueError("the families' samples are not written in their order")
        self._chunks = tuple(chunks)
        self._tail = pending if chunks else text
        self.size = len(chunks)
        # value -> its text: most values (bucket counts, sizes, limits) are those of the
        # previous scrape, and a dict lookup costs a tenth of floatToGoString
        self._memo: dict[float, str] = {}

    def render(self, values: Sequence[float]) -> str:
        """The text with `values` (as many as the template has samples, in their order)."""
        if len(values) != self.size:
            raise ValueError(f"{len(values)} values for a template of {self.size} samples")
        memo = self._memo
        if len(memo) > _MEMO_SIZE:
            memo.clear()
        out = []
        for chunk, v in zip(self._chunks, values, strict=True):
            if v:
                text = memo.get(v)
                if text is None:
                    text = memo[v] = _fmt(v)
            else:  # 0.0 and -0.0 are one key: not memoized, told apart by their sign
                text = _ZERO if math.copysign(1.0, v) > 0 else _fmt(v)
            out.append(chunk)
            out.append(text)
        out.append(self._tail)
        return "".join(out)
