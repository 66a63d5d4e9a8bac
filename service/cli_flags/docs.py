"""Renders docs/cli.md from the flag table, so the document cannot drift from the code.

Regenerate with `python -m service.cli_flags.docs > docs/cli.md`; a test compares the two.
"""

from __future__ import annotations

from collections.abc import Sequence

from service.cli_flags.help import default_text
from service.cli_flags.spec import Category, FlagSpec

_INTRO = """\
# llama-grpc-server command line

`llama-grpc-server` takes llama-server's flags and `LLAMA_ARG_*` environment variables: those of the
spec's README and those of today's llama-server (the pinned llama.cpp's `tools/server/README.md` and
`common/arg.cpp`). Every flag is in one table (`service/cli_flags/`), which builds the parser,
`--help` and this page (`python -m service.cli_flags.docs > docs/cli.md`). Each flag is:

- **implemented**: parsed into `service.config.ServerConfig` with llama-server's default, and
  honoured;
- **accepted, no effect yet**: a flag we mean to honour; its value is parsed and validated like an
  implemented flag's, and giving it logs `<flag>: accepted but has no effect yet: <what is
  missing>`. Values that ask for what the server already does (`--jinja`) are taken without a
  notice;
- **accepted**: parsed and logged as a notice (logger `service.config`) saying why it has no effect;
- **refused**: startup stops with `not supported: <flag> (<why>)` and exit code 2.

## Rules

- The command line wins over the environment, which wins over the default. A variable overridden by
  the command line is reported as a notice.
- Boolean variables take llama.cpp's spellings: `1/true/on/enabled` and `0/false/off/disabled`
  (anything else is an error). For a toggle `--x/--no-x` with variable `LLAMA_ARG_X`, the variable
  `LLAMA_ARG_NO_X` turns it off whatever its value, as in llama.cpp.
- Flags match exactly (no abbreviations, no `-c4096`); `--flag=value` and `--ctx_size` (underscores)
  work as in llama-server.
- A repeated flag keeps its last value, except the accumulating ones (`--lora`, `--lora-scaled`,
  `--api-key`, `--api-key-file`, `--alias`, `--tags`, `-l`, `-r`, `--dry-sequence-breaker`). For
  those, the command line replaces the variable rather than adding to it.
- The negative form of a refused toggle (`--no-agent`, `--no-models-autoload`) asks for nothing
  and is accepted with a notice.
- `--grpc-port` (env `LLAMA_ARG_GRPC_PORT`, default 50051) is ours; llama-server has no gRPC.
- `--drain-timeout` (env `LLAMA_ARG_DRAIN_TIMEOUT`, default 30) is ours too: on SIGTERM or SIGINT
  the server reports NOT_SERVING, refuses new calls with UNAVAILABLE and gives running ones that
  many seconds to finish before it exits with status 0 (see docs/deployment.md).
- `--threads-sampling` (env `LLAMA_ARG_THREADS_SAMPLING`, default: every CPU the process may use)
  is ours: after each decode the slots' next tokens are sampled together on that many threads
  (llama-server samples them one after another on one thread; see docs/benchmarks.md).
- `GRPC_EXPERIMENTS`: unless it is set, `llama-grpc-server` and `llama-rest-bridge` set it to
  `-event_engine_client,-event_engine_listener` before grpc loads, so that grpc polls its
  sockets itself rather than through its EventEngine's threads (less latency per message; see
  docs/rest.md, "Process layout and why"). Set it (e.g. to
  `event_engine_client,event_engine_listener`) to keep grpc's defaults.
- `LLAMA_GRPC_EVENT_LOOP`: `uvloop` (the default; asyncio's loop where uvloop is not installed)
  or `asyncio`, the event loop `llama-grpc-server` runs on (service/event_loop.py: uvloop takes
  15–26% less loop CPU per streamed token, docs/benchmarks.md, "The server on uvloop"); any
  other value stops it at start with the choices.

## Choices made where llama-server's two versions differ or leave room

- Defaults are today's llama-server's: `-c 0` (the model's context), `-np -1` (auto: 4 slots with a
  unified KV cache), `-fa auto`, `--timeout 3600`, `--top-p 0.95`, `--min-p 0.05`, `-sps 0.1`,
  `--jinja` on, `--slots` on. The spec's older README had 4096, 1, off, 600, 0.9, 0.1, 0.5, off
  and off. `--repeat-last-n -1` and `--dry-penalty-last-n -1` (context size) are still accepted,
  as the spec documents them.
- The older spellings still work: a bare `-fa` means `-fa on`; `--lora-scaled FNAME SCALE`;
  `--no-mmap`/`--mmap` and `--mlock` become `--load-mode none/mmap/mlock/mmap+mlock`
  (an explicit `--load-mode` wins); `LLAMA_ARG_NO_WEBUI`, `LLAMA_LOG_COLORS`,
  `LLAMA_LOG_VERBOSITY`, `LLAMA_LOG_PREFIX`, `LLAMA_LOG_TIMESTAMPS`, `LLAMA_ARG_MODEL_DRAFT` and
  `LLAMA_ARG_DRAFT_P_MIN` are read too.
- Speculative decoding (docs/api.md, "Speculative decoding"): `-md` loads a draft model (its
  vocabulary must be the target's, or start-up stops saying why) and drafts with it, as the
  spec's llama-server did (today's drafts with a plain model only given `--spec-type
  draft-simple` too, and otherwise loads it unused); `--spec-type ngram-simple` drafts from
  the request's own tokens; the other `--spec-type` kinds are refused. The draft
  defaults are today's (`--spec-draft-n-max 3`, `--spec-draft-n-min 0`, `--spec-draft-p-min
  0`; the spec's README had 16, 5 and 0.9), and its `--draft-max`/`--draft-min` (removed from
  today's llama-server) are read as `--spec-draft-n-max`/`--spec-draft-n-min`.
- `-m` (or `LLAMA_ARG_MODEL`) is required: without a model llama-server starts router mode, which is
  not supported.
- `--rerank` implies `--embedding` and `--pooling rank`; with embeddings, a `--batch-size` above
  `--ubatch-size` is lowered to it (as llama-server does, with a notice).
- `--reasoning on/off`, `--reasoning-effort` and `--reasoning-preserve` become the template
  variables `enable_thinking`, `reasoning_effort` and `preserve_reasoning`, merged over
  `--chat-template-kwargs` (as llama-server does).
- Stricter than llama-server, to fail loudly: unknown sampler names or letters, `--dry-base` below 1
  and `-np 0` are errors (llama-server warns, ignores or also refuses); TLS needs both key and
  certificate files, and they must exist.
- `HF_TOKEN` is not read: it is a general Hugging Face variable, and nothing is downloaded.
"""

_IMPLEMENTED = "Implemented"
_PLANNED = "Accepted, no effect yet (a notice is logged)"
_ACCEPTED = "Accepted with a notice (no effect)"
_REFUSED = "Refused (exit code 2)"
_SECTIONS = (
    (_IMPLEMENTED, lambda s: s.category is Category.IMPLEMENTED),
    (_PLANNED, lambda s: s.planned),
    (_ACCEPTED, lambda s: s.category is Category.ACCEPTED and not s.planned),
    (_REFUSED, lambda s: s.category is Category.REFUSED),
)
_HEADERS = {
    _IMPLEMENTED: ["| Flag | Env | Default | What it does |", "| --- | --- | --- | --- |"],
    _PLANNED: ["| Flag | Env | Default | What it does in llama-server | What is missing |",
               "| --- | --- | --- | --- | --- |"],
}
_REASON_HEADER = ["| Flag | Env | Why |", "| --- | --- | --- |"]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "\\n")


def _flag_cell(spec: FlagSpec) -> str:
    names = ", ".join(spec.all_names)
    value = f" {spec.metavar}" if spec.metavar else ""
    return f"`{_cell(names + value)}`"


def _row(spec: FlagSpec) -> str:
    env = ", ".join(f"`{name}`" for name in spec.env + spec.negative_env) or ""
    start = f"| {_flag_cell(spec)} | {env} |"
    if spec.category is Category.IMPLEMENTED:
        return f"{start} {_cell(default_text(spec))} | {_cell(spec.help)} |"
    if spec.planned:
        return f"{start} {_cell(default_text(spec))} | {_cell(spec.help)} | {_cell(spec.reason)} |"
    return f"{start} {_cell(spec.reason)} |"


def render(specs: Sequence[FlagSpec]) -> str:
    """The whole of docs/cli.md."""
    lines = [_INTRO.rstrip("\n")]
    for title, belongs in _SECTIONS:
        lines += ["", f"## {title}"]
        groups: dict[str, list[FlagSpec]] = {}
        for spec in specs:
            if belongs(spec):
                groups.setdefault(spec.group, []).append(spec)
        for group, members in groups.items():
            lines += ["", f"### {group}", ""]
            lines += _HEADERS.get(title, _REASON_HEADER)
            lines += [_row(spec) for spec in members]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from service.cli_flags import ALL_FLAGS

    print(render(ALL_FLAGS), end="")
