"""One row of the flag table: what a llama-server flag is called and what we do with it.

Every flag llama-server knows is one `FlagSpec`. The table modules only hold data; `parser.py`
builds argparse from it and resolves command line + environment into typed values; `docs.py`
renders it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

NOT_YET = "accepted but has no effect yet"
"""How the notice of a planned flag begins: `<flag>: accepted but has no effect yet: <reason>`."""


class Category(StrEnum):
    """What llama-grpc-server does when it meets a flag."""

    IMPLEMENTED = "implemented"
    """Parsed into ServerConfig with llama-server's default, and honoured."""
    ACCEPTED = "accepted"
    """Parsed and logged as a notice: the flag has no meaning for us (the reason says why), or,
    for a `planned` flag, its value is parsed and validated but not acted on yet."""
    REFUSED = "refused"
    """Startup stops with `not supported: <flag> (<reason>)` and exit code 2."""


Converter = Callable[[str], object]
TokensConverter = Callable[[tuple[str, ...]], object]


@dataclass(frozen=True)
class FlagSpec:
    """One llama-server flag: its spellings, environment variables, value syntax and our treatment.

    A flag takes a value when `metavar` is set; otherwise it is a switch (storing `const`) or, with
    `negative` spellings, an on/off toggle. Flags sharing a `dest` write the same setting, the last
    one on the command line winning (e.g. --chat-template and --chat-template-file).
    """

    names: tuple[str, ...]
    category: Category
    group: str
    help: str
    dest: str = ""
    metavar: str = ""
    negative: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    # Variables whose mere presence turns a toggle off, beyond the LLAMA_ARG_NO_<X> that llama.cpp
    # derives from LLAMA_ARG_<X> (an older llama-server read LLAMA_ARG_NO_WEBUI, for instance).
    negative_env: tuple[str, ...] = ()
    convert: Converter = str
    convert_tokens: TokensConverter | None = None
    nargs: int | str | None = None
    default: object = None
    const: object = True
    optional_value: bool = False
    repeat: bool = False
    minimum: float | None = None
    maximum: float | None = None
    reason: str = ""
    # For a refused flag: values that ask for nothing llama-grpc-server lacks (`--spec-type none`),
    # which are accepted with a notice instead of stopping startup.
    noop_values: tuple[str, ...] = ()
    default_text: str = ""
    # An accepted flag we mean to honour: its value is parsed into the settings like an
    # implemented one, and giving it logs `accepted but has no effect yet: <reason>`.
    planned: bool = False
    # For a planned flag: values (converted) asking for what llama-grpc-server already does
    # (`--reasoning-budget 0`), which are taken without a notice.
    honoured_values: tuple[object, ...] = ()

    @property
    def key(self) -> str:
        """The setting this flag writes: `dest`, else derived from its longest spelling."""
        if self.dest:
            return self.dest
        longest = max(self.names, key=len)
        return longest.lstrip("-").replace("-", "_").replace(".", "_")

    @property
    def has_setting(self) -> bool:
        """Whether the flag's value goes into the resolved settings (implemented or planned)."""
        return self.category is Category.IMPLEMENTED or self.planned

    @property
    def takes_value(self) -> bool:
        return bool(self.metavar)

    @property
    def is_toggle(self) -> bool:
        return bool(self.negative)

    @property
    def all_names(self) -> tuple[str, ...]:
        return self.names + self.negative

    @property
    def all_env(self) -> tuple[str, ...]:
        return self.env + self.derived_negative_env

    @property
    def derived_negative_env(self) -> tuple[str, ...]:
        """LLAMA_ARG_NO_<X> for each LLAMA_ARG_<X> of a toggle (llama.cpp's rule), plus extras."""
        if not self.is_toggle:
            return self.negative_env
        derived = tuple(
            "LLAMA_ARG_NO_" + name.removeprefix("LLAMA_ARG_")
            for name in self.env
            if name.startswith("LLAMA_ARG_")
        )
        return derived + tuple(e for e in self.negative_env if e not in derived)

    @property
    def label(self) -> str:
        """The spellings as llama-server's README lists them, e.g. `-c, --ctx-size`."""
        return ", ".join(self.all_names)


def implemented(
    names: tuple[str, ...], dest: str, group: str, help: str, **kwargs: Any
) -> FlagSpec:
    """A flag we honour; `dest` names the setting in the resolved values."""
    return FlagSpec(names, Category.IMPLEMENTED, group, help, dest=dest, **kwargs)


def accepted(names: tuple[str, ...], group: str, reason: str, **kwargs: Any) -> FlagSpec:
    """A flag taken for compatibility that changes nothing here; `reason` says why."""
    return FlagSpec(names, Category.ACCEPTED, group, reason, reason=reason, **kwargs)


def planned(
    names: tuple[str, ...], dest: str, group: str, help: str, missing: str, **kwargs: Any
) -> FlagSpec:
    """A flag we mean to honour but do not yet: parsed and validated into the settings, with the
    notice `<flag>: accepted but has no effect yet: <missing>`; `help` says what it will do."""
    return FlagSpec(
        names, Category.ACCEPTED, group, help, dest=dest, reason=missing, planned=True, **kwargs
    )


def refused(names: tuple[str, ...], group: str, reason: str, **kwargs: Any) -> FlagSpec:
    """A flag that asks for something llama-grpc-server does not do; `reason` says what."""
    return FlagSpec(names, Category.REFUSED, group, reason, reason=reason, **kwargs)
