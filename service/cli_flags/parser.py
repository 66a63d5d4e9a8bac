"""Command line + environment → typed settings, following llama-server's rules.

argparse is built from the flag table; every flag records its occurrences and the resolver applies
them: the command line wins over the environment, which wins over llama-server's default; a
repeated flag keeps its last value unless it accumulates (--lora, --api-key, ...). Accepted flags
become notices (planned ones are still parsed and validated), refused ones a ConfigError naming
each of them.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from service.cli_flags import values as v
from service.cli_flags.help import HelpFormatter, compat_epilog, help_text
from service.cli_flags.spec import NOT_YET, Category, FlagSpec

PROG = "llama-grpc-server"
_DESCRIPTION = (
    "Serve a GGUF model over gRPC and llama-server's HTTP API. Takes llama-server's flags and "
    "LLAMA_ARG_* environment variables; the command line wins over the environment."
)


class ConfigError(Exception):
    """A command line or environment that cannot be honoured; the message is for the user."""


@dataclass(frozen=True)
class Occurrence:
    """One appearance of a flag: on the command line (`source` is the spelling) or in env."""

    spec: FlagSpec
    source: str
    raw: str | tuple[str, ...] | None
    positive: bool = True
    from_env: bool = False


@dataclass(frozen=True)
class ResolvedFlags:
    """The settings of all implemented and planned flags, keyed by `FlagSpec.key`."""

    values: Mapping[str, object]
    explicit: frozenset[str]
    """Keys set on the command line or in the environment (not left at their default)."""
    notices: tuple[str, ...]


class _FlagParser(argparse.ArgumentParser):
    def _get_option_tuples(self, option_string: str) -> list[Any]:
        # llama-server matches flags exactly: no `--ctx` for --ctx-size, no `-c4096`.
        return []

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see --help)")


class _Record(argparse.Action):
    """Appends an Occurrence for its flag to `namespace.occurrences`."""

    def __init__(self, option_strings: Sequence[str], dest: str, spec: FlagSpec, **kw: Any):
        super().__init__(option_strings, dest, **kw)
        self.spec = spec

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        source = option_string or self.spec.names[0]
        raw: str | tuple[str, ...] | None = None
        if isinstance(values, str):
            raw = values
        elif values:  # nargs "+" or 2; a switch gets an empty list
            raw = tuple(str(item) for item in values)
        positive = source not in self.spec.negative
        namespace.occurrences.append(Occurrence(self.spec, source, raw, positive))


def build_parser(specs: Sequence[FlagSpec], version: str = "") -> argparse.ArgumentParser:
    """An argparse parser with one option per flag, grouped for --help."""
    parser = _FlagParser(
        prog=PROG,
        usage=f"{PROG} -m FNAME [options]",
        description=textwrap.fill(_DESCRIPTION, width=100),
        epilog=compat_epilog(specs),
        formatter_class=HelpFormatter,
        add_help=False,
        allow_abbrev=False,
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    for spec in specs:
        if not spec.has_setting:
            # Listed compactly in the epilog rather than one line each.
            parser.add_argument(*spec.all_names, **_argument_options(spec, argparse.SUPPRESS))
            continue
        title = spec.group
        group = groups.get(title) or groups.setdefault(title, parser.add_argument_group(title))
        if spec.key == "help":
            group.add_argument(*spec.names, action="help", help=spec.help)
        elif spec.key == "version":
            group.add_argument(*spec.names, action="version", version=version, help=spec.help)
        else:
            group.add_argument(*spec.all_names, **_argument_options(spec, help_text(spec)))
    return parser


def _argument_options(spec: FlagSpec, help: str) -> dict[str, Any]:
    nargs: int | str | None = spec.nargs
    if not spec.takes_value:
        nargs = 0
    elif spec.optional_value:
        nargs = "?"
    options: dict[str, Any] = {
        "action": _Record,
        "spec": spec,
        "dest": "flag_" + spec.key,
        "nargs": nargs,
        "help": help,
        "default": argparse.SUPPRESS,
    }
    if spec.takes_value:
        options["metavar"] = spec.metavar
    return options


def resolve(
    argv: Sequence[str], env: Mapping[str, str], specs: Sequence[FlagSpec], version: str = ""
) -> ResolvedFlags:
    """Parse `argv` and `env` against the table. Raises ConfigError; --help/--version exit 0."""
    parser = build_parser(specs, version)
    namespace = argparse.Namespace(occurrences=[])
    parser.parse_args(_dashes_for_underscores(argv, specs), namespace)
    cli: list[Occurrence] = namespace.occurrences
    from_env = [occ for spec in specs if (occ := _env_occurrence(spec, env)) is not None]
    _refuse(cli + from_env)
    notices = _notices(cli, from_env)
    values, explicit = _settings(specs, cli, from_env)
    return ResolvedFlags(values, frozenset(explicit), tuple(notices))


def _dashes_for_underscores(argv: Sequence[str], specs: Sequence[FlagSpec]) -> list[str]:
    """llama-server reads `--ctx_size` as `--ctx-size`; so do we, for known flags only."""
    known = {name for spec in specs for name in spec.all_names}
    result = []
    for token in argv:
        name, sep, rest = token.partition("=")
        if token.startswith("--") and name not in known and name.replace("_", "-") in known:
            token = name.replace("_", "-") + sep + rest
        result.append(token)
    return result


def _env_occurrence(spec: FlagSpec, env: Mapping[str, str]) -> Occurrence | None:
    for name in spec.derived_negative_env:
        if name in env:
            # llama.cpp's rule: LLAMA_ARG_NO_<X> turns the toggle off, whatever its value.
            return Occurrence(spec, name, None, positive=False, from_env=True)
    for name in spec.env:
        if name not in env:
            continue
        text = env[name]
        if spec.takes_value:
            return Occurrence(spec, name, text, from_env=True)
        try:
            enabled = v.parse_bool(text)
        except ValueError as exc:
            raise ConfigError(f"invalid value {text!r} for {name} ({spec.label}): {exc}") from None
        if spec.is_toggle:
            return Occurrence(spec, name, None, positive=enabled, from_env=True)
        return Occurrence(spec, name, None, from_env=True) if enabled else None
    return None


def _asks_for_nothing(occ: Occurrence) -> bool:
    """A refused flag in a form that requests nothing we lack: `--no-agent`, `--spec-type none`."""
    if not occ.positive:
        return True
    return isinstance(occ.raw, str) and occ.raw.strip().lower() in occ.spec.noop_values


def _describe(occ: Occurrence) -> str:
    if occ.from_env:
        return f"{occ.source} (environment variable for {occ.spec.names[-1]})"
    return occ.source


def _refuse(occurrences: Sequence[Occurrence]) -> None:
    problems = [
        f"not supported: {_describe(occ)} ({occ.spec.reason})"
        for occ in occurrences
        if occ.spec.category is Category.REFUSED and not _asks_for_nothing(occ)
    ]
    if problems:
        raise ConfigError("\n".join(dict.fromkeys(problems)))


def _already_honoured(occ: Occurrence) -> bool:
    """A planned flag whose value asks for what we already do (`--reasoning-format none`)."""
    return bool(occ.spec.honoured_values) and _convert(occ) in occ.spec.honoured_values


def _notices(cli: Sequence[Occurrence], from_env: Sequence[Occurrence]) -> list[str]:
    notices = []
    for occ in (*from_env, *cli):
        if occ.spec.planned:
            if not _already_honoured(occ):
                notices.append(f"{_describe(occ)}: {NOT_YET}: {occ.spec.reason}")
        elif occ.spec.category is not Category.IMPLEMENTED:
            notices.append(
                f"{_describe(occ)}: accepted for llama-server compatibility, "
                f"no effect ({occ.spec.reason})"
            )
    cli_keys = {occ.spec.key: occ.source for occ in cli}
    for occ in from_env:
        if occ.spec.has_setting and occ.spec.key in cli_keys:
            notices.append(
                f"{occ.source} is set, but the command line's {cli_keys[occ.spec.key]} "
                "takes precedence"
            )
    return list(dict.fromkeys(notices))


def _settings(
    specs: Sequence[FlagSpec], cli: Sequence[Occurrence], from_env: Sequence[Occurrence]
) -> tuple[dict[str, object], set[str]]:
    values: dict[str, object] = {}
    for spec in specs:
        if spec.has_setting and spec.key not in ("help", "version"):
            values.setdefault(spec.key, spec.default)
    explicit: set[str] = set()
    for layer in (from_env, cli):
        started: set[str] = set()  # accumulating keys this layer has begun to replace
        for occ in layer:
            if not occ.spec.has_setting:
                continue
            key, value = occ.spec.key, _convert(occ)
            if occ.spec.repeat:
                previous = values[key] if key in started else ()
                assert isinstance(previous, tuple) and isinstance(value, tuple)
                values[key] = previous + value
                started.add(key)
            else:
                values[key] = value
            explicit.add(key)
    return values, explicit


def _convert(occ: Occurrence) -> object:
    spec = occ.spec
    try:
        if occ.raw is None:
            value = occ.positive if spec.is_toggle else spec.const
        elif isinstance(occ.raw, tuple):
            value = spec.convert_tokens(occ.raw) if spec.convert_tokens else " ".join(occ.raw)
        else:
            value = spec.convert(occ.raw)
        _check_range(spec, value)
    except ValueError as exc:
        shown = occ.raw if not isinstance(occ.raw, tuple) else " ".join(occ.raw)
        raise ConfigError(f"invalid value {shown!r} for {_describe(occ)}: {exc}") from None
    return value


def _check_range(spec: FlagSpec, value: object) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return
    if spec.minimum is not None and value < spec.minimum:
        raise ValueError(f"must be >= {spec.minimum:g}")
    if spec.maximum is not None and value > spec.maximum:
        raise ValueError(f"must be <= {spec.maximum:g}")
