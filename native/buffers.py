"""The sizes of llama.cpp's backend buffers, read from the lines it logs when it allocates them.

llama.h has no call that returns the compute buffers' sizes, nor where any buffer lives; llama.cpp
logs each buffer once, as it allocates it (`load_tensors: CPU_Mapped model buffer size = 8.46
MiB`, `llama_kv_cache: CUDA0 KV buffer size = ...`, `llama_context: CPU  output buffer size =
...`, `sched_reserve: CUDA0 compute buffer size = ...`). native._ffi.captured_log collects the
lines of the thread that creates a model or a context; parse_buffer_sizes reads them here.
The figures are as logged: MiB with two decimals, so within 0.005 MiB (~5 KiB) of the truth.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# What llama.cpp calls each buffer in its log line -> our name for the part it holds.
# RS: the recurrent state of Mamba-like models, their counterpart of the KV cache.
KINDS = {"model": "model_weights", "KV": "kv_cache", "RS": "kv_cache", "compute": "compute",
         "output": "output"}
_LINE = re.compile(r"^\w+: +(?P<buft>\S+) +(?P<kind>model|KV|RS|compute|output) buffer size "
                   r"= +(?P<mib>\d+(?:\.\d+)?) MiB$")
_MIB = 1024 * 1024


@dataclass(frozen=True)
class BufferSize:
    """One buffer llama.cpp allocated: its part, its buffer type's name, its size in bytes."""

    part: str  # one of KINDS' values
    buffer_type: str  # ggml's name: CPU, CPU_Mapped, CPU_REPACK, CUDA0, CUDA_Host, Metal, ...
    bytes: int

    @property
    def on_host(self) -> bool:
        """Whether it is host memory: the CPU backend's buffer types and the pinned host
        buffers of GPU backends (`CUDA_Host`, ...); any other type is a device's memory."""
        return is_host_buffer_type(self.buffer_type)

    @property
    def memory(self) -> str:
        return "host" if self.on_host else "device"


def is_host_buffer_type(name: str) -> bool:
    return name.startswith("CPU") or name.endswith("_Host")


def parse_buffer_line(line: str) -> BufferSize | None:
    """The buffer a log line announces, or None for any other line."""
    m = _LINE.match(line.strip())
    if m is None:
        return None
    return BufferSize(KINDS[m["kind"]], m["buft"], round(float(m["mib"]) * _MIB))


def parse_buffer_sizes(lines: Iterable[str]) -> tuple[BufferSize, ...]:
    """Every buffer the lines announce, in their order (a model or a KV cache may have
    several: one per buffer type, or per layer group of an iSWA cache)."""
    return tuple(b for b in map(parse_buffer_line, lines) if b is not None)
