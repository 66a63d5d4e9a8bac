"""Helpers for service.config: typed access to resolved flag values, and derived settings.

The resolver hands back `object`s keyed by setting name; `Settings` checks each against the type
the config field needs, so a table/config mismatch fails loudly at startup instead of later.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

from service.cli_flags.parser import ResolvedFlags


class Settings:
    """Typed reads of resolved flag values, plus notices produced while deriving the config."""

    def __init__(self, resolved: ResolvedFlags) -> None:
        self._values = resolved.values
        self._explicit = resolved.explicit
        self.notices: list[str] = []
        self.read: set[str] = set()  # keys consumed, so a test can find settings nobody uses

    def given(self, key: str) -> bool:
        """Whether the command line or environment set `key` (rather than its default)."""
        return key in self._explicit

    def _value(self, key: str) -> object:
        self.read.add(key)
        return self._values[key]

    def _get(self, key: str, kind: type | tuple[type, ...]) -> object:
        value = self._value(key)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind in (int, float)):
            raise TypeError(f"setting {key!r} is {value!r}, expected {kind}")
        return value

    def int_(self, key: str) -> int:
        value = self._get(key, int)
        assert isinstance(value, int)
        return value

    def float_(self, key: str) -> float:
        value = self._get(key, (int, float))
        assert isinstance(value, int | float)
        return float(value)

    def str_(self, key: str) -> str:
        value = self._get(key, str)
        assert isinstance(value, str)
        return value

    def bool_(self, key: str) -> bool:
        value = self._get(key, bool)
        assert isinstance(value, bool)
        return value

    def opt_str(self, key: str) -> str | None:
        return None if self._value(key) is None else self.str_(key)

    def opt_bool(self, key: str) -> bool | None:
        return None if self._value(key) is None else self.bool_(key)

    def tuple_(self, key: str) -> tuple[object, ...]:
        value = self._get(key, tuple)
        assert isinstance(value, tuple)
        return value

    def strs(self, key: str) -> tuple[str, ...]:
        items = self.tuple_(key)
        if not all(isinstance(item, str) for item in items):
            raise TypeError(f"setting {key!r} is {items!r}, expected strings")
        return tuple(str(item) for item in items)

    def floats(self, key: str) -> tuple[float, ...]:
        numbers = tuple(item for item in self.tuple_(key) if isinstance(item, int | float))
        if len(numbers) != len(self.tuple_(key)):
            raise TypeError(f"setting {key!r} is {self.tuple_(key)!r}, expected numbers")
        return tuple(float(item) for item in numbers)

    def pairs(self, key: str) -> tuple[tuple[object, float], ...]:
        """Items of (name or id, number): LoRA adapters with scales, logit biases."""
        result = []
        for item in self.tuple_(key):
            if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], int | float):
                result.append((item[0], float(item[1])))
            else:
                raise TypeError(f"setting {key!r} has {item!r}, expected (name, number)")
        return tuple(result)

    def mapping(self, key: str) -> Mapping[str, object]:
        value = self._value(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise TypeError(f"setting {key!r} is {value!r}, expected a JSON object")
        return value


def derive_load_mode(s: Settings) -> str:
    """--load-mode, else what the older --mlock and --mmap/--no-mmap flags mean in its terms."""
    mmap, mlock = s.opt_bool("mmap"), s.bool_("mlock")
    if s.given("load_mode"):
        if s.given("mmap") or s.given("mlock"):
            s.notices.append("--load-mode takes precedence over --mlock/--mmap/--no-mmap")
        return s.str_("load_mode")
    if mmap is False:
        return "mlock" if mlock else "none"
    if mlock:
        return "mmap+mlock"
    return "mmap" if mmap else s.str_("load_mode")


def physical_core_count() -> int:
    """Physical cores this process may run on: llama-server's default thread count."""
    cpus = os.sched_getaffinity(0)
    cores = set()
    for cpu in cpus:
        siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            cores.add(siblings.read_text().strip())
        except OSError:
            return max(1, len(cpus))
    return max(1, len(cores))


def usable_cpu_count() -> int:
    """CPUs this process may run on: the default sampling thread count (sampling runs between
    decodes, when the decode threads are idle)."""
    return max(1, len(os.sched_getaffinity(0)))


def version_string() -> str:
    try:
        version = metadata.version("llama-grpc")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"llama-grpc-server {version} (llama-server compatible command line)"
