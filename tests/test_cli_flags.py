"""llama-server's command line and LLAMA_ARG_* variables → ServerConfig (service.config).

Pure parsing: no model is loaded. The README coverage tests read llama-server's two READMEs (the
spec's and the pinned llama.cpp's) and check every flag and variable in their tables is ours.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest

from native.paths import REPO_ROOT, source_dir
from service.cli_flags import ALL_FLAGS, Category, ConfigError, FlagSpec, resolve
from service.cli_flags.docs import render
from service.config import assemble, load_config, parse_args
from service.config_derive import Settings

MODEL = ["-m", "x.gguf"]
# A valid value for any flag, so that a flag can be given without knowing its syntax.
DUMMY_VALUE = "1"


def _readme_paths() -> dict[str, Path]:
    spec = os.environ.get("LLAMA_GRPC_SPEC_README", "/work/shared/spec/llama-server-README.md")
    return {"spec": Path(spec), "pinned": source_dir() / "tools/server/README.md"}


def _readme_rows(which: str) -> list[str]:
    path = _readme_paths()[which]
    if not path.is_file():
        pytest.skip(f"{which} README not found at {path}")
    rows = [line for line in path.read_text().splitlines() if line.startswith("| `-")]
    assert len(rows) > 100, f"{path} has too few flag rows; the table format changed?"
    return rows


def _all_names() -> set[str]:
    return {name for spec in ALL_FLAGS for name in spec.all_names}


def _all_env() -> set[str]:
    return {name for spec in ALL_FLAGS for name in spec.env + spec.derived_negative_env}


def _example_argv(spec: FlagSpec, name: str) -> list[str]:
    if not spec.takes_value or name in spec.negative:
        return [name]
    count = spec.nargs if isinstance(spec.nargs, int) else 1
    return [name] + [DUMMY_VALUE] * count


@pytest.mark.parametrize("which", ["spec", "pinned"])
def test_every_readme_flag_is_in_the_table(which: str) -> None:
    missing = set()
    for row in _readme_rows(which):
        first_cell = row.split("` |")[0].removeprefix("| `")
        flags = re.findall(r"(?:^|, |\s)(--?[A-Za-z][\w.-]*)", first_cell)
        missing |= set(flags) - _all_names()
    assert not missing, f"flags of the {which} README missing from the table: {sorted(missing)}"


@pytest.mark.parametrize("which", ["spec", "pinned"])
def test_every_readme_env_variable_is_in_the_table(which: str) -> None:
    readme_env = {v for row in _readme_rows(which) for v in re.findall(r"\(env: (\w+)\)", row)}
    # HF_TOKEN belongs to -hft, which we accept but whose general-purpose variable we do not read.
    missing = readme_env - _all_env() - {"HF_TOKEN"}
    assert not missing, f"variables of the {which} README missing: {sorted(missing)}"


def test_table_is_consistent() -> None:
    names = [name for spec in ALL_FLAGS for name in spec.all_names]
    assert len(names) == len(set(names)), "a flag spelling appears twice"
    by_key: dict[str, list[FlagSpec]] = {}
    for spec in ALL_FLAGS:
        assert spec.help and (spec.category is Category.IMPLEMENTED or spec.reason), spec.names
        by_key.setdefault(spec.key, []).append(spec)
    for key, specs in by_key.items():
        assert len({repr(s.default) for s in specs}) == 1, f"{key}: specs disagree on default"
        assert len({s.repeat for s in specs}) == 1, f"{key}: specs disagree on repeat"
        assert len({s.category for s in specs}) == 1, f"{key}: mixed categories"


def test_every_implemented_setting_reaches_the_config() -> None:
    resolved = resolve(MODEL, {}, ALL_FLAGS)
    settings = Settings(resolved)
    assemble(settings)
    assert set(resolved.values) - settings.read == set()


def test_realistic_llama_server_command_line() -> None:
    command = "-m x.gguf -c 4096 -np 8 --host 0.0.0.0 --port 8081 --api-key k1,k2 -fa on"
    argv = [*command.split(), "--offline", "--no-webui", "--alias", "foo"]
    config = load_config(argv, {})
    assert config.model.path == "x.gguf"
    assert config.model.aliases == ("foo",)
    assert config.model.served_names == ("foo",)
    assert config.context.n_ctx == 4096
    assert config.context.n_parallel == 8
    assert config.context.kv_unified is False
    assert config.context.flash_attn == "on"
    assert config.net.hosts == ("0.0.0.0",)
    assert config.net.host == "0.0.0.0"
    assert config.net.port == 8081
    assert config.net.grpc_port == 50051
    assert config.net.api_keys == ("k1", "k2")
    assert any(n.startswith("--offline: accepted") for n in config.notices)
    assert config.net.webui is False  # the REST bridge serves no page at /


def test_defaults_are_todays_llama_server() -> None:
    config = load_config(MODEL, {})
    assert config.context.n_ctx == 0
    assert (config.context.n_parallel, config.context.kv_unified) == (4, True)  # -np auto
    assert (config.context.n_batch, config.context.n_ubatch) == (2048, 512)
    assert config.context.flash_attn == "auto"
    assert config.context.n_threads >= 1 and config.context.n_threads_batch >= 1
    assert (config.sampling.temperature, config.sampling.top_k) == (0.8, 40)
    assert (config.sampling.top_p, config.sampling.min_p) == (0.95, 0.05)
    assert config.sampling.dry_sequence_breakers == ("\n", ":", '"', "*")
    assert config.sampling.samplers[0] == "penalties"
    assert config.chat.use_jinja is True
    assert config.endpoints.slots is True and config.endpoints.metrics is False
    assert (config.net.hosts, config.net.port, config.net.timeout) == (("127.0.0.1",), 8080, 3600)
    assert config.model.served_names == ("x.gguf",)
    assert config.model.load_mode == "auto"
    assert config.log.verbosity == 3
    assert config.notices == ()


def test_command_line_wins_over_environment() -> None:
    env = {"LLAMA_ARG_CTX_SIZE": "1024", "LLAMA_ARG_PORT": "9000", "LLAMA_ARG_MODEL": "env.gguf"}
    from_env = load_config([], env)
    assert (from_env.model.path, from_env.context.n_ctx, from_env.net.port) == (
        "env.gguf", 1024, 9000,
    )  # fmt: skip
    both = load_config(["-m", "cli.gguf", "-c", "2048"], env)
    assert (both.model.path, both.context.n_ctx, both.net.port) == ("cli.gguf", 2048, 9000)
    assert "LLAMA_ARG_CTX_SIZE is set, but the command line's -c takes precedence" in both.notices


def test_command_line_replaces_accumulating_environment_value() -> None:
    config = load_config([*MODEL, "--api-key", "cli"], {"LLAMA_API_KEY": "a,b"})
    assert config.net.api_keys == ("cli",)
    assert load_config(MODEL, {"LLAMA_API_KEY": "a,b"}).net.api_keys == ("a", "b")


@pytest.mark.parametrize("word", ["1", "true", "on", "enabled", "TRUE"])
def test_env_truthy_spellings(word: str) -> None:
    config = load_config(MODEL, {"LLAMA_ARG_ENDPOINT_METRICS": word, "LLAMA_ARG_JINJA": word})
    assert config.endpoints.metrics is True and config.chat.use_jinja is True


@pytest.mark.parametrize("word", ["0", "false", "off", "disabled"])
def test_env_falsey_spellings(word: str) -> None:
    config = load_config(MODEL, {"LLAMA_ARG_ENDPOINT_METRICS": word, "LLAMA_ARG_JINJA": word})
    assert config.endpoints.metrics is False and config.chat.use_jinja is False


def test_env_bad_boolean_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r"invalid value 'yes please' for LLAMA_ARG_JINJA"):
        load_config(MODEL, {"LLAMA_ARG_JINJA": "yes please"})


def test_env_no_variants_turn_toggles_off() -> None:
    env = {"LLAMA_ARG_NO_ENDPOINT_SLOTS": "1", "LLAMA_ARG_NO_CONTEXT_SHIFT": "1"}
    config = load_config([*MODEL, "--context-shift"], env)
    assert config.endpoints.slots is False  # the spec's LLAMA_ARG_NO_ENDPOINT_SLOTS
    assert config.context.context_shift is True  # the command line still wins
    webui = load_config(MODEL, {"LLAMA_ARG_NO_WEBUI": "1"})  # an older llama-server's name
    assert webui.net.webui is False
    assert load_config(MODEL, {}).net.webui is True


@pytest.mark.parametrize(
    "spec",
    [s for s in ALL_FLAGS if s.category is Category.ACCEPTED and not s.planned],
    ids=lambda s: s.names[-1],
)
def test_accepted_flags_log_a_notice(spec: FlagSpec, caplog: pytest.LogCaptureFixture) -> None:
    for name in spec.all_names:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="service.config"):
            parse_args([*MODEL, *_example_argv(spec, name)], {})
        expected = f"{name}: accepted for llama-server compatibility, no effect ({spec.reason})"
        assert [r.getMessage() for r in caplog.records] == [expected]


# Each planned flag (accepted, no effect yet): a value asking for what is missing, the setting
# it reaches, a value we already honour (no notice) or None, and an invalid value.
PLANNED_EXAMPLES: dict[str, tuple[list[str], tuple[str, object], list[str] | None, list[str]]] = {
    "--tags": (["--tags", "chat,small"], ("model.tags", ("chat", "small")), None, []),
    "--timeout": (["--timeout", "60"], ("net.timeout", 60), None, ["--timeout", "-1"]),
    "--adaptive-target": (["--adaptive-target", "0.3"], ("sampling.adaptive_target", 0.3), None,
                          ["--adaptive-target", "2"]),
    "--adaptive-decay": (["--adaptive-decay", "0.5"], ("sampling.adaptive_decay", 0.5),
                         ["--adaptive-decay", "0.9"], ["--adaptive-decay", "1.5"]),
    "--jinja": (["--no-jinja"], ("chat.use_jinja", False), ["--jinja"], []),
    "--log-colors": (["--log-colors", "on"], ("log.colors", "on"), ["--log-colors", "off"],
                     ["--log-colors", "rainbow"]),
    "--log-prefix": (["--no-log-prefix"], ("log.prefix", False), ["--log-prefix"], []),
}


def _config_value(config: object, path: str) -> object:
    for part in path.split("."):
        config = getattr(config, part)
    return config


def test_every_planned_flag_has_an_example() -> None:
    planned = {s.names[-1] for s in ALL_FLAGS if s.planned}
    assert planned == set(PLANNED_EXAMPLES)


@pytest.mark.parametrize("spec", [s for s in ALL_FLAGS if s.planned], ids=lambda s: s.names[-1])
def test_planned_flags_parse_and_say_what_is_missing(
    spec: FlagSpec, caplog: pytest.LogCaptureFixture
) -> None:
    argv, (path, value), honoured, invalid = PLANNED_EXAMPLES[spec.names[-1]]
    with caplog.at_level(logging.WARNING, logger="service.config"):
        config = parse_args([*MODEL, *argv], {})
    assert [r.getMessage() for r in caplog.records] == [
        f"{argv[0]}: accepted but has no effect yet: {spec.reason}"
    ]
    assert _config_value(config, path) == value
    if honoured:
        assert load_config([*MODEL, *honoured], {}).notices == ()
    if invalid:
        with pytest.raises(ConfigError, match=re.escape(f"invalid value {invalid[1]!r}")):
            load_config([*MODEL, *invalid], {})


def test_planned_flag_from_environment_says_what_is_missing() -> None:
    config = load_config(MODEL, {"LLAMA_ARG_TIMEOUT": "60", "LLAMA_ARG_JINJA": "1"})
    assert config.net.timeout == 60
    assert config.notices == (
        "LLAMA_ARG_TIMEOUT (environment variable for --timeout): accepted but has no effect "
        "yet: neither the gRPC service nor the REST bridge enforces a read/write timeout yet",
    )


@pytest.mark.parametrize(
    "spec", [s for s in ALL_FLAGS if s.category is Category.REFUSED], ids=lambda s: s.names[-1]
)
def test_refused_flags_exit_2(spec: FlagSpec, capsys: pytest.CaptureFixture[str]) -> None:
    for name in spec.names:
        with pytest.raises(SystemExit) as exit_info:
            parse_args([*MODEL, *_example_argv(spec, name)], {})
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert f"llama-grpc-server: error: not supported: {name} ({spec.reason})" in err


def test_refused_flag_from_environment_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(MODEL, {"LLAMA_ARG_HF_REPO": "org/model"})
    assert exit_info.value.code == 2
    assert "not supported: LLAMA_ARG_HF_REPO (environment variable for --hf-repo)" in (
        capsys.readouterr().err
    )


def test_refused_flags_that_ask_for_nothing_are_accepted() -> None:
    config = load_config([*MODEL, "--no-agent", "--no-models-autoload"], {})
    assert len(config.notices) == 2
    # --spec-type is implemented (issue 20): none turns speculation off, without a notice.
    config = load_config([*MODEL, "--spec-type", "none"], {})
    assert not config.notices and not config.speculative.enabled


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-c", "abc"], "invalid value 'abc' for -c: expected an integer"),
        (["-c", "-1"], "invalid value '-1' for -c: must be >= 0"),
        (["-b", "0"], "invalid value '0' for -b: must be >= 1"),
        (["-np", "0"], "invalid value 0 for -np/--parallel"),
        (["--port", "70000"], "must be <= 65535"),
        (["-fa", "maybe"], "expected on, off or auto"),
        (["-ctk", "q7"], "expected one of f32, f16"),
        (["--samplers", "top_k;warp"], "unknown sampler 'warp'"),
        (["--repeat-penalty", "0"], "must be >= 1e-30"),
        (["--chat-template-kwargs", "[1]"], "expected a JSON object"),
        (["--api-key-file", "/nonexistent/keys"], "cannot read file"),
        (["--ssl-key-file", __file__], "TLS needs both --ssl-key-file and --ssl-cert-file"),
        (["--ctx", "5"], "unrecognized arguments: --ctx 5"),
        (["-c4096"], "unrecognized arguments: -c4096"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ],
)
def test_bad_values_are_clear_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config([*MODEL, *argv], {})


def test_a_model_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args([], {})
    assert exit_info.value.code == 2
    assert "no model to serve: pass -m/--model FNAME" in capsys.readouterr().err


def test_help_and_version_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    for flag in ("-h", "--help", "--usage"):
        with pytest.raises(SystemExit) as exit_info:
            parse_args([flag], {})
        assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for heading in ("Model and adapters:", "Sampling defaults", "Network and security:"):
        assert heading in text
    assert "-ngl, --gpu-layers, --n-gpu-layers N" in text
    assert "Not supported (startup stops with exit code 2" in text
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--version"], {})
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("llama-grpc-server ")


def test_older_and_newer_spellings() -> None:
    bare_fa = load_config([*MODEL, "-fa", "-c", "16"], {})
    assert (bare_fa.context.flash_attn, bare_fa.context.n_ctx) == ("on", 16)
    assert load_config([*MODEL, "--ctx_size", "32"], {}).context.n_ctx == 32
    assert load_config([*MODEL, "--ctx-size=64"], {}).context.n_ctx == 64
    two_forms = ["--lora-scaled", "a.gguf", "0.5", "--lora-scaled", "b:0.25,c:2"]
    lora = load_config([*MODEL, *two_forms], {})
    assert [(a.path, a.scale) for a in lora.model.lora_adapters] == [
        ("a.gguf", 0.5), ("b", 0.25), ("c", 2.0),
    ]  # fmt: skip
    env_fa = load_config(MODEL, {"LLAMA_ARG_FLASH_ATTN": "1", "LLAMA_LOG_COLORS": "off"})
    assert (env_fa.context.flash_attn, env_fa.log.colors) == ("on", "off")


@pytest.mark.parametrize(
    ("argv", "load_mode"),
    [
        ([], "auto"),
        (["--no-mmap"], "none"),
        (["--mlock"], "mmap+mlock"),
        (["--no-mmap", "--mlock"], "mlock"),
        (["--mmap"], "mmap"),
        (["--mlock", "-lm", "dio"], "dio"),
    ],
)
def test_load_mode_from_older_flags(argv: list[str], load_mode: str) -> None:
    assert load_config([*MODEL, *argv], {}).model.load_mode == load_mode


def test_derived_settings() -> None:
    rerank = load_config([*MODEL, "--rerank", "-b", "4096", "-ub", "256"], {})
    assert rerank.context.embeddings and rerank.context.pooling == "rank"
    assert rerank.endpoints.reranking and rerank.context.n_batch == 256
    per_slot = load_config([*MODEL, "-np", "3", "--kv-unified-per-slot", "1000"], {})
    assert per_slot.context.n_ctx == 3000
    pinned = load_config([*MODEL, "-np", "3", "--kv-unified-per-slot", "1000", "-c", "0"], {})
    assert pinned.context.n_ctx == 0
    threads = load_config([*MODEL, "-t", "3"], {})
    assert (threads.context.n_threads, threads.context.n_threads_batch) == (3, 3)
    verbose = load_config([*MODEL, "-lv", "1", "-v"], {})
    assert verbose.log.verbosity > 5
    assert load_config([*MODEL, "-v", "-lv", "1"], {}).log.verbosity == 1


def test_sampling_defaults_parse() -> None:
    argv = [
        *MODEL, "--temp", "-3", "--seed", "42", "--sampling-seq", "kt", "-l", "15043-inf",
        "-l", "7+2", "--dry-sequence-breaker", "none", "--dry-sequence-breaker", "##",
        "-r", "STOP", "-n", "128", "--mirostat", "2",
    ]  # fmt: skip
    sampling = load_config(argv, {}).sampling
    assert (sampling.temperature, sampling.seed, sampling.n_predict) == (0.0, 42, 128)
    assert sampling.samplers == ("top_k", "temperature")
    assert [(b.token, b.bias) for b in sampling.logit_bias] == [(15043, float("-inf")), (7, 2.0)]
    assert sampling.dry_sequence_breakers == ("##",)
    assert (sampling.stop, sampling.mirostat) == (("STOP",), 2)
    names = load_config([*MODEL, "--samplers", "top-k;Temp;minp"], {}).sampling
    assert names.samplers == ("top_k", "temperature", "min_p")


def test_files_are_read(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("# team keys\nalpha\n\nbeta\r\n")
    template = tmp_path / "t.jinja"
    template.write_text("{{ messages }}")
    argv = [
        *MODEL, "--api-key", "k0", "--api-key-file", str(keys), "--chat-template-file",
        str(template), "--slot-save-path", str(tmp_path), "--reasoning", "off",
        "--chat-template-kwargs", '{"x": 1}', "--reasoning-effort", "high",
    ]  # fmt: skip
    config = load_config(argv, {})
    assert config.net.api_keys == ("k0", "alpha", "beta")
    assert config.chat.chat_template == "{{ messages }}"
    assert config.endpoints.slot_save_path == str(tmp_path)
    assert dict(config.chat.template_kwargs) == {
        "x": 1, "enable_thinking": False, "reasoning_effort": "high",
    }  # fmt: skip
    with pytest.raises(ConfigError, match="not a directory"):
        load_config([*MODEL, "--slot-save-path", str(keys)], {})


def test_docs_cli_md_is_up_to_date() -> None:
    docs = REPO_ROOT / "docs" / "cli.md"
    assert docs.read_text() == render(ALL_FLAGS), (
        "docs/cli.md is stale: run python -m service.cli_flags.docs > docs/cli.md"
    )
