"""Flag table, part 2: server-wide sampling defaults, used where a request does not say.

Defaults are today's llama-server's (common_params_sampling in the pinned llama.cpp).
"""

from __future__ import annotations

from typing import Any

from service.cli_flags import values as v
from service.cli_flags.spec import FlagSpec, implemented, planned, refused

SAMPLING = "Sampling defaults (used where a request does not say)"

DEFAULT_SAMPLERS = (
    "penalties", "dry", "top_n_sigma", "top_k", "typ_p", "top_p", "min_p", "xtc", "temperature",
)  # fmt: skip
DEFAULT_DRY_SEQUENCE_BREAKERS = ("\n", ":", '"', "*")

_ADAPTIVE_WHY = "the adaptive-p sampler runs with target 0.5 and decay 0.9 whatever this says"
_JSON_SCHEMA_WHY = (
    "a server-wide default JSON schema is not supported yet; constrain generations with a GBNF "
    "--grammar or --grammar-file instead"
)


def _float(names: tuple[str, ...], dest: str, help: str, default: float, **kw: Any) -> FlagSpec:
    return implemented(names, dest, SAMPLING, help, metavar="N", convert=v.parse_float,
                       default=default, **kw)  # fmt: skip


def _int(names: tuple[str, ...], dest: str, help: str, default: int, **kw: Any) -> FlagSpec:
    return implemented(names, dest, SAMPLING, help, metavar="N", convert=v.parse_int,
                       default=default, **kw)  # fmt: skip


SAMPLING_FLAGS: tuple[FlagSpec, ...] = (
    implemented(
        ("--samplers",), "samplers", SAMPLING,
        "samplers to use, in order, separated by ';'",
        metavar="SAMPLERS", convert=v.parse_sampler_names, default=DEFAULT_SAMPLERS,
        default_text=";".join(DEFAULT_SAMPLERS),
    ),
    implemented(
        ("--sampler-seq", "--sampling-seq"), "samplers", SAMPLING,
        "the same as --samplers, one letter per sampler",
        metavar="SEQUENCE", convert=v.parse_sampler_chars, default=DEFAULT_SAMPLERS,
        default_text="edskypmxt",
    ),
    implemented(
        ("-s", "--seed"), "seed", SAMPLING, "RNG seed (-1 = random)",
        metavar="SEED", convert=v.parse_seed, default=v.RANDOM_SEED,
    ),
    _int(("-n", "--predict", "--n-predict"), "n_predict",
         "number of tokens to predict (-1 = infinity, -2 = until context filled)", -1,
         env=("LLAMA_ARG_N_PREDICT",), minimum=-2),
    implemented(
        ("--ignore-eos",), "ignore_eos", SAMPLING,
        "ignore end of stream token and continue generating", default=False,
    ),
    implemented(
        ("--temp", "--temperature"), "temperature", SAMPLING, "temperature (negative = 0)",
        metavar="N", env=("LLAMA_ARG_TEMPERATURE",), convert=v.parse_temperature, default=0.8,
    ),
    _int(("--top-k",), "top_k", "top-k sampling (0 = disabled)", 40, env=("LLAMA_ARG_TOP_K",)),
    _float(("--top-p",), "top_p", "top-p sampling (1.0 = disabled)", 0.95,
           env=("LLAMA_ARG_TOP_P",)),
    _float(("--min-p",), "min_p", "min-p sampling (0.0 = disabled)", 0.05,
           env=("LLAMA_ARG_MIN_P",)),
    _float(("--top-nsigma", "--top-n-sigma"), "top_n_sigma",
           "top-n-sigma sampling (-1.0 = disabled)", -1.0),
    _float(("--xtc-probability",), "xtc_probability", "xtc probability (0.0 = disabled)", 0.0),
    _float(("--xtc-threshold",), "xtc_threshold", "xtc threshold (1.0 = disabled)", 0.1),
    _float(("--typical", "--typical-p"), "typical_p",
           "locally typical sampling, parameter p (1.0 = disabled)", 1.0),
    _int(("--repeat-last-n",), "repeat_last_n",
         "last n tokens to consider for penalties (0 = disabled, -1 = context size)", 64,
         minimum=-1),
    implemented(
        ("--repeat-penalty",), "repeat_penalty", SAMPLING,
        "penalize repeat sequence of tokens (1.0 = disabled)",
        metavar="N", env=("LLAMA_ARG_REPEAT_PENALTY",), convert=v.parse_finite_float,
        default=1.0, minimum=1e-30,
    ),
    implemented(
        ("--presence-penalty",), "presence_penalty", SAMPLING,
        "repeat alpha presence penalty (0.0 = disabled)",
        metavar="N", env=("LLAMA_ARG_PRESENCE_PENALTY",), convert=v.parse_finite_float,
        default=0.0,
    ),
    implemented(
        ("--frequency-penalty",), "frequency_penalty", SAMPLING,
        "repeat alpha frequency penalty (0.0 = disabled)",
        metavar="N", env=("LLAMA_ARG_FREQUENCY_PENALTY",), convert=v.parse_finite_float,
        default=0.0,
    ),
    _float(("--dry-multiplier",), "dry_multiplier", "DRY sampling multiplier (0.0 = disabled)",
           0.0),
    _float(("--dry-base",), "dry_base", "DRY sampling base value (>= 1.0)", 1.75, minimum=1.0),
    _int(("--dry-allowed-length",), "dry_allowed_length", "allowed length for DRY sampling", 2),
    _int(("--dry-penalty-last-n",), "dry_penalty_last_n",
         "DRY penalty for the last n tokens (0 = disabled, -1 = context size)", 64, minimum=-1),
    implemented(
        ("--dry-sequence-breaker",), "dry_sequence_breakers", SAMPLING,
        "add a DRY sequence breaker, replacing the defaults ('\\n', ':', '\"', '*'); "
        "'none' for no breakers",
        metavar="STRING", convert=v.parse_single, repeat=True, default=(),
        default_text="\\n : \" *",
    ),
    planned(("--adaptive-target",), "adaptive_target", SAMPLING,
            "adaptive-p: select tokens near this probability (negative = disabled)", _ADAPTIVE_WHY,
            metavar="N", convert=v.parse_float, default=-1.0, maximum=1.0),
    planned(("--adaptive-decay",), "adaptive_decay", SAMPLING,
            "adaptive-p: decay rate of the target adaptation (0.0 to 0.99)", _ADAPTIVE_WHY,
            metavar="N", convert=v.parse_float, default=0.9, minimum=0.0, maximum=0.99,
            honoured_values=(0.9,)),
    _float(("--dynatemp-range",), "dynatemp_range", "dynamic temperature range (0.0 = disabled)",
           0.0),
    _float(("--dynatemp-exp",), "dynatemp_exponent", "dynamic temperature exponent", 1.0),
    implemented(
        ("--mirostat",), "mirostat", SAMPLING,
        "Mirostat sampling: 0 = disabled, 1 = Mirostat, 2 = Mirostat 2.0",
        metavar="N", convert=v.parse_int, default=0, minimum=0, maximum=2,
    ),
    _float(("--mirostat-lr",), "mirostat_eta", "Mirostat learning rate, parameter eta", 0.1),
    _float(("--mirostat-ent",), "mirostat_tau", "Mirostat target entropy, parameter tau", 5.0),
    implemented(
        ("-l", "--logit-bias"), "logit_bias", SAMPLING,
        "bias a token's likelihood, e.g. 15043+1 or 15043-1 (repeatable)",
        metavar="TOKEN_ID(+/-)BIAS", convert=v.parse_logit_bias, repeat=True, default=(),
        default_text="none",
    ),
    implemented(
        ("--grammar",), "grammar", SAMPLING, "default BNF-like grammar to constrain generations",
        metavar="GRAMMAR", default="", default_text="none",
    ),
    implemented(
        ("--grammar-file",), "grammar", SAMPLING, "read the default grammar from a file",
        metavar="FNAME", convert=v.read_text_file, default="", default_text="none",
    ),
    # Refused rather than ignored: generations would silently ignore the schema they rely on.
    refused(("-j", "--json-schema"), SAMPLING, _JSON_SCHEMA_WHY, metavar="SCHEMA"),
    refused(("-jf", "--json-schema-file"), SAMPLING, _JSON_SCHEMA_WHY, metavar="FILE"),
    implemented(
        ("-r", "--reverse-prompt"), "stop", SAMPLING,
        "default stop string for requests that give none (repeatable)",
        metavar="PROMPT", convert=v.parse_single, repeat=True, default=(), default_text="none",
    ),
)  # fmt: skip
