"""The process's own metrics in GET /metrics (`llamagrpc_process_*`): prometheus-client's
ProcessCollector's families and values, read with less work on the event loop.

The collector builds six metric families on every scrape and reads three files (its stat,
limits, and the fd directory): ~37 us of CPU here, most of it Python holding the GIL the
engine thread needs between decodes. The families' shape is fixed, so a scrape here reads the
values only: the same stat fields with the collector's own arithmetic (its clock ticks and
page size, found as it finds them), the fd directory's length, and the soft RLIMIT_NOFILE
(what /proc/self/limits' "Max open files" line shows) from getrlimit: ~18 us, most of it the
kernel listing the fds. Where the collector's families are not the six expected (no /proc,
another prometheus-client), every scrape asks the collector.
"""

from __future__ import annotations

import os
import resource

from prometheus_client import ProcessCollector
from prometheus_client.core import Metric

# ProcessCollector's families, in the order it yields them (the counter's name without _total).
_NAMES = ("virtual_memory_bytes", "resident_memory_bytes", "start_time_seconds",
          "cpu_seconds", "open_fds", "max_fds")


def _clock_ticks() -> float:
    """What the collector divides stat's times by (its fallback included)."""
    try:
        return float(os.sysconf("SC_CLK_TCK"))
    except (ValueError, OSError):
        return 100.0


class ProcessMetrics:
    """The process families (`families`, made once, for a template's shape) and their values
    on each scrape (`values`)."""

    def __init__(self, namespace: str) -> None:
        self.collector = ProcessCollector(namespace=namespace, registry=None)
        try:
            found = list(self.collector.collect())
        except ValueError:  # an unlimited fd limit: the collector fails on each scrape
            found = []
        prefix = f"{namespace}_process_" if namespace else "process_"
        shaped = [f.name for f in found] == [prefix + n for n in _NAMES]
        # the collector's start time: its boot time plus the stat field, a constant
        self._start = found[2].samples[0].value if shaped else None
        self._ticks = _clock_ticks()
        self._pagesize = resource.getpagesize()
        self.families: list[Metric] = found

    def values(self) -> list[float] | None:
        """The six values in the families' order, or None where the families are read from
        the collector (the shape is not the known one, or a read failed: the collector then
        leaves out what it cannot read)."""
        if self._start is None:
            return None
        try:
            with open("/proc/self/stat", "rb") as stat:
                parts = stat.read().split(b")")[-1].split()
            open_fds = len(os.listdir("/proc/self/fd"))
        except OSError:
            return None
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if soft == resource.RLIM_INFINITY:
            return None
        utime, stime = float(parts[11]) / self._ticks, float(parts[12]) / self._ticks
        return [float(parts[20]), float(parts[21]) * self._pagesize, self._start,
                utime + stime, float(open_fds), float(soft)]
