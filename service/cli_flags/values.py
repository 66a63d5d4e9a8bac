"""Value parsers for flag values, in llama-server's syntax (the same text works in env variables).

Each parser takes the raw text and returns a typed value, or raises ValueError saying what was
expected; the resolver adds which flag or variable the text came from. Parsers that name a file
read it here, as llama-server does while parsing, so a bad path stops startup with a clear message.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Callable
from pathlib import Path

TRUTHY = ("on", "enabled", "true", "1")
FALSEY = ("off", "disabled", "false", "0")
AUTOY = ("auto", "-1")

# n_gpu_layers as llama.cpp's common params encode it: -1 = auto, <= -2 = all layers.
GPU_LAYERS_AUTO = -1
GPU_LAYERS_ALL = -2

# llama.h's LLAMA_DEFAULT_SEED (0xFFFFFFFF) means "pick a random seed"; we spell it -1.
RANDOM_SEED = -1
_UINT32_MAX = 0xFFFFFFFF

KV_CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")

# Sampler names in llama-server's canonical spelling, and the one-letter codes of --sampling-seq.
SAMPLER_NAMES = (
    "penalties", "dry", "top_n_sigma", "top_k", "typ_p", "top_p", "min_p", "xtc",
    "temperature", "infill", "adaptive_p",
)  # fmt: skip
SAMPLER_CHARS = {
    "e": "penalties", "d": "dry", "s": "top_n_sigma", "k": "top_k", "y": "typ_p", "p": "top_p",
    "m": "min_p", "x": "xtc", "t": "temperature", "i": "infill", "a": "adaptive_p",
}  # fmt: skip
_SAMPLER_ALIASES = {"nucleus": "top_p", "temp": "temperature", "typ": "typ_p"}


def parse_int(text: str) -> int:
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise ValueError("expected an integer") from None


def parse_float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError("expected a number") from None
    if math.isnan(value):
        raise ValueError("expected a number, not NaN")
    return value


def parse_finite_float(text: str) -> float:
    value = parse_float(text)
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def parse_temperature(text: str) -> float:
    """llama-server clamps a negative temperature to 0 (greedy) rather than rejecting it."""
    return max(parse_float(text), 0.0)


def parse_bool(text: str) -> bool:
    """llama.cpp's boolean spellings: 1/true/on/enabled and 0/false/off/disabled."""
    word = text.strip().lower()
    if word in TRUTHY:
        return True
    if word in FALSEY:
        return False
    raise ValueError("expected a boolean (1/true/on/enabled or 0/false/off/disabled)")


def parse_on_off_auto(text: str) -> str:
    """`on`, `off` or `auto`, accepting every boolean spelling for on/off (and -1 for auto)."""
    word = text.strip().lower()
    if word in TRUTHY:
        return "on"
    if word in FALSEY:
        return "off"
    if word in AUTOY:
        return "auto"
    raise ValueError("expected on, off or auto")


def choice(*allowed: str) -> Callable[[str], str]:
    """A parser accepting exactly one of `allowed` (case-insensitive)."""

    def parse_choice(text: str) -> str:
        word = text.strip().lower()
        if word not in allowed:
            raise ValueError("expected one of " + ", ".join(allowed))
        return word

    return parse_choice


def parse_csv(text: str) -> tuple[str, ...]:
    """Comma-separated items (double quotes protect commas), stripped, empty items dropped."""
    row = next(csv.reader([text], skipinitialspace=True), [])
    return tuple(item.strip() for item in row if item.strip())


def parse_host_list(text: str) -> tuple[str, ...]:
    hosts = parse_csv(text)
    if not hosts:
        raise ValueError("expected at least one address")
    return hosts


def parse_gpu_layers(text: str) -> int:
    """A layer count, `auto` or `all` (negative counts keep llama.cpp's meaning)."""
    word = text.strip().lower()
    if word == "auto":
        return GPU_LAYERS_AUTO
    if word == "all":
        return GPU_LAYERS_ALL
    try:
        return parse_int(word)
    except ValueError:
        raise ValueError("expected a number of layers, 'auto' or 'all'") from None


def parse_seed(text: str) -> int:
    value = parse_int(text)
    if value == _UINT32_MAX:
        return RANDOM_SEED
    if not RANDOM_SEED <= value < _UINT32_MAX:
        raise ValueError(f"expected -1 (random) or 0..{_UINT32_MAX - 1}")
    return value


def parse_tensor_split(text: str) -> tuple[float, ...]:
    """Proportions separated by `,` or `/`, e.g. `3,1`."""
    parts = [p for p in re.split(r"[,/]+", text.strip()) if p]
    if not parts:
        raise ValueError("expected proportions such as 3,1")
    values = tuple(parse_float(p) for p in parts)
    if any(v < 0 for v in values):
        raise ValueError("proportions must not be negative")
    return values


def parse_cache_type(text: str) -> str:
    return choice(*KV_CACHE_TYPES)(text)


def parse_lora_paths(text: str) -> tuple[tuple[str, float], ...]:
    """`--lora A,B`: adapters applied with scale 1.0."""
    paths = parse_csv(text)
    if not paths:
        raise ValueError("expected a LoRA adapter path")
    return tuple((path, 1.0) for path in paths)


def _lora_item(item: str) -> tuple[str, float]:
    path, sep, scale = item.rpartition(":")
    if not sep or not path:
        raise ValueError("expected FNAME:SCALE")
    return path, parse_float(scale)


def parse_lora_scaled(text: str) -> tuple[tuple[str, float], ...]:
    """Today's `--lora-scaled FNAME:SCALE,...`."""
    items = parse_csv(text)
    if not items:
        raise ValueError("expected FNAME:SCALE")
    return tuple(_lora_item(item) for item in items)


def parse_lora_scaled_tokens(tokens: tuple[str, ...]) -> tuple[tuple[str, float], ...]:
    """`--lora-scaled FNAME SCALE` (the spec's two-argument form) or `FNAME:SCALE,...`."""
    if len(tokens) == 2 and ":" not in tokens[1]:
        try:
            return ((tokens[0], parse_float(tokens[1])),)
        except ValueError:
            pass
    if len(tokens) != 1:
        raise ValueError("expected FNAME SCALE or FNAME:SCALE,...")
    return parse_lora_scaled(tokens[0])


def parse_logit_bias(text: str) -> tuple[tuple[int, float], ...]:
    """`TOKEN_ID+BIAS` or `TOKEN_ID-BIAS`, e.g. 15043+1 or 15043-inf."""
    match = re.fullmatch(r"\s*(\d+)\s*([+-])\s*(\S+)\s*", text)
    if match is None:
        raise ValueError("expected TOKEN_ID(+/-)BIAS, e.g. 15043+1")
    magnitude = parse_float(match.group(3))
    return ((int(match.group(1)), -magnitude if match.group(2) == "-" else magnitude),)


def _sampler_from_name(name: str) -> str:
    word = name.strip().lower()
    if word in _SAMPLER_ALIASES:
        return _SAMPLER_ALIASES[word]
    for canonical in SAMPLER_NAMES:
        if word in (canonical, canonical.replace("_", "-"), canonical.replace("_", "")):
            return canonical
    raise ValueError(f"unknown sampler {name!r} (known: {', '.join(SAMPLER_NAMES)})")


def parse_sampler_names(text: str) -> tuple[str, ...]:
    """`--samplers`: names separated by `;` (kebab-case, no-dash and a few aliases accepted)."""
    return tuple(_sampler_from_name(n) for n in text.split(";") if n.strip())


def parse_sampler_chars(text: str) -> tuple[str, ...]:
    """`--sampling-seq`: one letter per sampler, e.g. edskypmxt."""
    unknown = sorted({c for c in text.strip() if c not in SAMPLER_CHARS})
    if unknown:
        raise ValueError(f"unknown sampler letters {''.join(unknown)!r} (known: edskypmxtia)")
    return tuple(SAMPLER_CHARS[c] for c in text.strip())


def read_text_file(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read file: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError("file is not UTF-8 text") from None


def parse_json_object(text: str) -> dict[str, object]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise ValueError("expected a JSON object")
    return value


def read_api_key_file(path: str) -> tuple[str, ...]:
    """One key per line; empty lines and lines starting with `#` are skipped."""
    lines = read_text_file(path).splitlines()
    return tuple(line for line in (raw.rstrip("\r") for raw in lines) if line and line[0] != "#")


def parse_directory(path: str) -> str:
    if not Path(path).is_dir():
        raise ValueError("not a directory")
    return path


def parse_existing_file(path: str) -> str:
    if not Path(path).is_file():
        raise ValueError("no such file")
    return path


def parse_single(text: str) -> tuple[str, ...]:
    """A repeatable string flag: each occurrence adds one item."""
    return (text,)
