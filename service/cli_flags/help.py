"""--help text from the flag table: llama-server's look (`-c, --ctx-size N`), grouped by topic."""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence

from service.cli_flags.spec import Category, FlagSpec

_WIDTH = 100


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Lists every spelling once, then the value: `-ngl, --gpu-layers, --n-gpu-layers N`."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=40, width=_WIDTH)

    def _format_action_invocation(self, action: argparse.Action) -> str:
        names = ", ".join(action.option_strings)
        if action.nargs == 0 or action.metavar is None:
            return names
        return f"{names} {action.metavar}"


def default_text(spec: FlagSpec) -> str:
    """The default as help and docs show it; empty when there is nothing useful to say."""
    if spec.default_text:
        return spec.default_text
    value = spec.default
    if isinstance(value, bool):
        return "enabled" if value else "disabled"
    if value is None or value == "" or value == ():
        return ""
    if isinstance(value, tuple):
        return ",".join(str(item) for item in value)
    return str(value)


def help_text(spec: FlagSpec) -> str:
    """One flag's help line: what it does (or why it does nothing), default, variables."""
    parts = [spec.help]
    if spec.planned:
        parts.append(f"[no effect yet: {spec.reason}]")
    shown_default = default_text(spec) if spec.has_setting else ""
    if shown_default:
        parts.append(f"(default: {shown_default})")
    if spec.env:
        parts.append(f"(env: {', '.join(spec.env)})")
    # argparse %-formats help strings.
    return " ".join(parts).replace("%", "%%")


def _wrapped(text: str) -> list[str]:
    return textwrap.wrap(
        text, width=_WIDTH, initial_indent="  ", subsequent_indent="    ", break_on_hyphens=False
    )


def compat_epilog(specs: Sequence[FlagSpec]) -> str:
    """The accepted and refused flags, by topic and reason, after the flags we honour."""
    accepted: dict[tuple[str, str], list[str]] = {}
    refused: dict[str, list[str]] = {}
    for spec in specs:
        if spec.category is Category.ACCEPTED and not spec.planned:
            accepted.setdefault((spec.group, spec.reason), []).extend(spec.all_names)
        elif spec.category is Category.REFUSED:
            refused.setdefault(spec.group, []).extend(spec.names)
    lines = ["Accepted for llama-server compatibility, with no effect (a notice is logged):"]
    for (group, reason), names in accepted.items():
        lines += _wrapped(f"{group}: {', '.join(names)} ({reason})")
    lines += ["", "Not supported (startup stops with exit code 2; --no-<flag> forms are accepted):"]
    for group, names in refused.items():
        lines += _wrapped(f"{group}: {', '.join(names)}")
    lines += ["", "Every flag, its category and the reason: docs/cli.md"]
    return "\n".join(lines)
