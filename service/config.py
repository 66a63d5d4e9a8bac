"""llama-grpc-server's configuration: llama-server's flags and LLAMA_ARG_* variables, typed.

`parse_args(argv, env)` is the entry point: the command line wins over the environment, which wins
over llama-server's defaults (service/cli_flags holds the table of every flag). Flags that have no
meaning here are accepted and logged as notices (logger "service.config"); flags asking for what we
do not support stop startup with `not supported: <flag> (<why>)` and exit code 2.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from service.cli_flags import ALL_FLAGS, ConfigError, resolve
from service.cli_flags.parser import PROG, ResolvedFlags
from service.cli_flags.table_limits import limits_of
from service.config_derive import (
    Settings,
    derive_load_mode,
    physical_core_count,
    usable_cpu_count,
    version_string,
)
from service.config_speculative import SpeculativeConfig, speculative_config
from service.limits import RequestLimits

logger = logging.getLogger("service.config")

__all__ = [
    "ChatConfig",
    "ConfigError",
    "ContextConfig",
    "EndpointConfig",
    "LogConfig",
    "LogitBias",
    "LoraAdapter",
    "ModelConfig",
    "SamplingDefaults",
    "ServerConfig",
    "ServerNetConfig",
    "load_config",
    "parse_args",
]

# llama-server with --parallel auto (the default): 4 slots sharing one unified KV cache.
AUTO_PARALLEL_SLOTS = 4


@dataclass(frozen=True)
class LoraAdapter:
    path: str
    scale: float


@dataclass(frozen=True)
class LogitBias:
    token: int
    bias: float


@dataclass(frozen=True)
class ModelConfig:
    path: str
    aliases: tuple[str, ...]
    tags: tuple[str, ...]
    n_gpu_layers: int  # -1 = auto, <= -2 = all (cli_flags.values.GPU_LAYERS_*)
    split_mode: str  # none | layer | row | tensor
    main_gpu: int
    tensor_split: tuple[float, ...]
    load_mode: str  # llama_load_mode: auto | none | mmap | mlock | mmap+mlock | dio
    lazy_mode: str  # llama_lazy_mode: on | off | auto
    check_tensors: bool
    repack: bool  # llama_model_params.use_extra_bufts
    no_host: bool
    lora_adapters: tuple[LoraAdapter, ...]
    lora_init_without_apply: bool
    mmproj: str = ""  # the multimodal projector's path (--mmproj); "" for none
    mmproj_offload: bool = True  # the projector on the GPU (--no-mmproj-offload: CPU)

    @property
    def served_names(self) -> tuple[str, ...]:
        """The model's names in the API: the aliases, else the path as given (llama-server's)."""
        return self.aliases or (self.path,)


@dataclass(frozen=True)
class ContextConfig:
    n_ctx: int  # 0 = the model's training context
    n_batch: int
    n_ubatch: int
    n_parallel: int  # slots, resolved (>= 1)
    kv_unified: bool
    n_keep: int
    context_shift: bool
    flash_attn: str  # on | off | auto
    cache_type_k: str
    cache_type_v: str
    kv_offload: bool
    op_offload: bool
    swa_full: bool
    rope_scaling: str | None  # none | linear | yarn; None = from model
    rope_freq_base: float  # 0 = from model
    rope_freq_scale: float  # 0 = from model
    yarn_orig_ctx: int
    yarn_ext_factor: float
    yarn_attn_factor: float
    yarn_beta_slow: float
    yarn_beta_fast: float
    n_threads: int  # resolved (>= 1)
    n_threads_batch: int  # resolved (>= 1)
    n_threads_sampling: int  # resolved (>= 1)
    warmup: bool
    perf: bool  # llama_context_params.no_perf is its negation
    embeddings: bool
    pooling: str | None  # none | mean | cls | last | rank; None = from model


@dataclass(frozen=True)
class SamplingDefaults:
    """Sampling settings for requests that do not give their own."""

    seed: int  # -1 = random
    n_predict: int  # -1 = no limit
    temperature: float
    top_k: int
    top_p: float
    min_p: float
    top_n_sigma: float
    typical_p: float
    xtc_probability: float
    xtc_threshold: float
    repeat_last_n: int
    repeat_penalty: float
    presence_penalty: float
    frequency_penalty: float
    dry_multiplier: float
    dry_base: float
    dry_allowed_length: int
    dry_penalty_last_n: int
    dry_sequence_breakers: tuple[str, ...]
    adaptive_target: float
    adaptive_decay: float
    dynatemp_range: float
    dynatemp_exponent: float
    mirostat: int
    mirostat_tau: float
    mirostat_eta: float
    ignore_eos: bool
    samplers: tuple[str, ...]  # canonical names, e.g. ("penalties", "dry", ..., "temperature")
    logit_bias: tuple[LogitBias, ...]
    grammar: str  # "" = none (a default --json-schema is refused: not supported yet)
    stop: tuple[str, ...]


@dataclass(frozen=True)
class ChatConfig:
    use_jinja: bool
    chat_template: str | None  # built-in name or Jinja source; None = the model's
    template_kwargs: Mapping[str, object]  # --chat-template-kwargs merged with --reasoning* flags
    reasoning_format: str  # none | auto | deepseek | deepseek-legacy
    reasoning: str  # on | off | auto
    reasoning_budget: int  # -1 = unrestricted
    reasoning_budget_message: str | None
    skip_chat_parsing: bool
    prefill_assistant: bool


@dataclass(frozen=True)
class ServerNetConfig:
    hosts: tuple[str, ...]
    port: int
    grpc_port: int
    api_prefix: str
    api_keys: tuple[str, ...]  # --api-key and --api-key-file together; empty = no auth
    ssl_key_file: str | None
    ssl_cert_file: str | None
    timeout: int
    drain_timeout: float  # seconds running calls get on SIGTERM
    sse_ping_interval: int  # -1 = disabled
    cors_origins: str
    cors_methods: str
    cors_headers: str
    cors_credentials: bool
    webui: bool = True  # the REST bridge's page at / (--no-webui: none)
    static_path: str | None = None  # --path: the bridge serves this directory at / instead

    @property
    def host(self) -> str:
        return self.hosts[0]


@dataclass(frozen=True)
class EndpointConfig:
    metrics: bool
    slots: bool
    props: bool
    slot_save_path: str | None
    slot_prompt_similarity: float
    max_queue: int  # requests that may wait; 0 = no limit (ours: --max-queue)
    reranking: bool
    cache_prompt: bool
    special: bool
    spm_infill: bool
    embd_normalize: int
    cache_reuse: int = 0  # --cache-reuse: requests' default n_cache_reuse


@dataclass(frozen=True)
class LogConfig:
    disabled: bool
    file: str | None
    verbosity: int  # 0 generic .. 5 debug; llama-server's default 3 = info
    colors: str  # on | off | auto
    timestamps: bool
    prefix: bool


@dataclass(frozen=True)
class ServerConfig:
    model: ModelConfig
    context: ContextConfig
    sampling: SamplingDefaults
    chat: ChatConfig
    net: ServerNetConfig
    endpoints: EndpointConfig
    log: LogConfig
    notices: tuple[str, ...]
    """What parsing had to tell the user (accepted no-op flags, overridden variables)."""
    limits: RequestLimits = field(default_factory=RequestLimits)  # ours: service.limits
    speculative: SpeculativeConfig = field(default_factory=SpeculativeConfig)  # -md, --spec-type


def parse_args(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    log_notices: bool = True,
) -> ServerConfig:
    """Parse a llama-server command line and environment (default: sys.argv[1:], os.environ).

    On a bad or refused flag, prints `llama-grpc-server: error: ...` to stderr and exits with 2;
    --help and --version print and exit with 0. Notices are logged as warnings unless
    `log_notices` is false (they are also in `ServerConfig.notices`).
    """
    try:
        config = load_config(sys.argv[1:] if argv is None else argv, env)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            print(f"{PROG}: error: {line}", file=sys.stderr)
        raise SystemExit(2) from None
    if log_notices:
        for notice in config.notices:
            logger.warning("%s", notice)
    return config


def load_config(argv: Sequence[str], env: Mapping[str, str] | None = None) -> ServerConfig:
    """Like parse_args, but raises ConfigError instead of exiting and logs nothing."""
    import os

    resolved = resolve(argv, os.environ if env is None else env, ALL_FLAGS, version_string())
    return _assemble(resolved)


def _assemble(resolved: ResolvedFlags) -> ServerConfig:
    return assemble(Settings(resolved), resolved.notices)


def assemble(s: Settings, notices: tuple[str, ...] = ()) -> ServerConfig:
    """Build the config from resolved settings (load_config's second half, separate for tests)."""
    context = _context(s)
    return ServerConfig(
        model=_model(s),
        context=context,
        sampling=_sampling(s),
        chat=_chat(s),
        net=_net(s),
        endpoints=_endpoints(s, context),
        log=LogConfig(
            disabled=s.bool_("log_disable"),
            file=s.opt_str("log_file"),
            verbosity=s.int_("verbosity"),
            colors=s.str_("log_colors"),
            timestamps=s.bool_("log_timestamps"),
            prefix=s.bool_("log_prefix"),
        ),
        notices=notices + tuple(s.notices),
        limits=limits_of(s),
        speculative=speculative_config(s),
    )


def _model(s: Settings) -> ModelConfig:
    path = s.opt_str("model_path")
    if not path:
        raise ConfigError(
            "no model to serve: pass -m/--model FNAME or set LLAMA_ARG_MODEL "
            "(downloads and router mode are not supported)"
        )
    lora = s.pairs("lora")
    return ModelConfig(
        path=path,
        aliases=tuple(dict.fromkeys(s.strs("aliases"))),
        tags=tuple(dict.fromkeys(s.strs("tags"))),
        n_gpu_layers=s.int_("n_gpu_layers"),
        split_mode=s.str_("split_mode"),
        main_gpu=s.int_("main_gpu"),
        tensor_split=s.floats("tensor_split"),
        load_mode=derive_load_mode(s),
        lazy_mode=s.str_("lazy_mode"),
        check_tensors=s.bool_("check_tensors"),
        repack=s.bool_("repack"),
        no_host=s.bool_("no_host"),
        lora_adapters=tuple(LoraAdapter(str(path), scale) for path, scale in lora),
        lora_init_without_apply=s.bool_("lora_init_without_apply"),
        mmproj=s.opt_str("mmproj") or "",
        mmproj_offload=s.bool_("mmproj_offload"),
    )


def _context(s: Settings) -> ContextConfig:
    n_parallel, kv_unified = s.int_("n_parallel"), s.bool_("kv_unified")
    if n_parallel == 0:
        raise ConfigError("invalid value 0 for -np/--parallel: must be >= 1, or -1 for auto")
    if n_parallel < 0:
        n_parallel, kv_unified = AUTO_PARALLEL_SLOTS, True
    n_ctx, per_slot = s.int_("n_ctx"), s.int_("kv_unified_per_slot")
    if per_slot > 0 and not s.given("n_ctx"):
        n_ctx = n_parallel * per_slot
    reranking = s.bool_("reranking")
    embeddings = s.bool_("embeddings") or reranking
    n_batch, n_ubatch = s.int_("n_batch"), s.int_("n_ubatch")
    if embeddings and n_batch > n_ubatch:
        # Embeddings need the whole input in one ubatch; llama-server lowers n_batch the same way.
        s.notices.append(f"embeddings: lowering --batch-size {n_batch} to --ubatch-size {n_ubatch}")
        n_batch = n_ubatch
    n_threads = s.int_("n_threads")
    if n_threads <= 0:
        n_threads = physical_core_count()
    n_threads_batch = s.int_("n_threads_batch")
    n_threads_sampling = s.int_("n_threads_sampling")
    if n_threads_sampling <= 0:
        n_threads_sampling = usable_cpu_count()
    return ContextConfig(
        n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_ubatch, n_parallel=n_parallel,
        kv_unified=kv_unified, n_keep=s.int_("n_keep"), context_shift=s.bool_("context_shift"),
        flash_attn=s.str_("flash_attn"), cache_type_k=s.str_("cache_type_k"),
        cache_type_v=s.str_("cache_type_v"), kv_offload=s.bool_("kv_offload"),
        op_offload=s.bool_("op_offload"), swa_full=s.bool_("swa_full"),
        rope_scaling=s.opt_str("rope_scaling"), rope_freq_base=s.float_("rope_freq_base"),
        rope_freq_scale=s.float_("rope_freq_scale"), yarn_orig_ctx=s.int_("yarn_orig_ctx"),
        yarn_ext_factor=s.float_("yarn_ext_factor"), yarn_attn_factor=s.float_("yarn_attn_factor"),
        yarn_beta_slow=s.float_("yarn_beta_slow"), yarn_beta_fast=s.float_("yarn_beta_fast"),
        n_threads=n_threads, n_threads_batch=n_threads_batch if n_threads_batch > 0 else n_threads,
        n_threads_sampling=n_threads_sampling, warmup=s.bool_("warmup"), perf=s.bool_("perf"),
        embeddings=embeddings,
        pooling="rank" if reranking else s.opt_str("pooling"),
    )  # fmt: skip


def _sampling(s: Settings) -> SamplingDefaults:
    from service.cli_flags.table_sampling import DEFAULT_DRY_SEQUENCE_BREAKERS

    breakers: tuple[str, ...] = DEFAULT_DRY_SEQUENCE_BREAKERS
    given_breakers = s.strs("dry_sequence_breakers")
    if s.given("dry_sequence_breakers"):
        # The first --dry-sequence-breaker replaces the defaults; "none" clears what came before.
        collected: list[str] = []
        for item in given_breakers:
            collected = [] if item == "none" else [*collected, item]
        breakers = tuple(collected)
    return SamplingDefaults(
        seed=s.int_("seed"), n_predict=s.int_("n_predict"),
        temperature=s.float_("temperature"), top_k=s.int_("top_k"), top_p=s.float_("top_p"),
        min_p=s.float_("min_p"), top_n_sigma=s.float_("top_n_sigma"),
        typical_p=s.float_("typical_p"), xtc_probability=s.float_("xtc_probability"),
        xtc_threshold=s.float_("xtc_threshold"), repeat_last_n=s.int_("repeat_last_n"),
        repeat_penalty=s.float_("repeat_penalty"), presence_penalty=s.float_("presence_penalty"),
        frequency_penalty=s.float_("frequency_penalty"),
        dry_multiplier=s.float_("dry_multiplier"), dry_base=s.float_("dry_base"),
        dry_allowed_length=s.int_("dry_allowed_length"),
        dry_penalty_last_n=s.int_("dry_penalty_last_n"), dry_sequence_breakers=breakers,
        adaptive_target=s.float_("adaptive_target"), adaptive_decay=s.float_("adaptive_decay"),
        dynatemp_range=s.float_("dynatemp_range"),
        dynatemp_exponent=s.float_("dynatemp_exponent"), mirostat=s.int_("mirostat"),
        mirostat_tau=s.float_("mirostat_tau"), mirostat_eta=s.float_("mirostat_eta"),
        ignore_eos=s.bool_("ignore_eos"), samplers=s.strs("samplers"),
        logit_bias=tuple(_logit_bias(token, bias) for token, bias in s.pairs("logit_bias")),
        grammar=s.str_("grammar"), stop=s.strs("stop"),
    )  # fmt: skip


def _logit_bias(token: object, bias: float) -> LogitBias:
    if not isinstance(token, int):
        raise TypeError(f"logit bias token {token!r} is not an id")
    return LogitBias(token, bias)


def _chat(s: Settings) -> ChatConfig:
    kwargs = dict(s.mapping("chat_template_kwargs"))
    reasoning = s.str_("reasoning")
    # As llama-server does: the reasoning flags are template variables in the end.
    if reasoning != "auto":
        kwargs["enable_thinking"] = reasoning == "on"
    if s.int_("reasoning_budget") == 0:  # as llama-server: no budget, no thinking
        kwargs["enable_thinking"] = False
    if s.str_("reasoning_effort") != "default":
        kwargs["reasoning_effort"] = s.str_("reasoning_effort")
    preserve = s.opt_bool("reasoning_preserve")
    if preserve is not None:
        kwargs["preserve_reasoning"] = preserve
    return ChatConfig(
        use_jinja=s.bool_("use_jinja"),
        chat_template=s.opt_str("chat_template"),
        template_kwargs=MappingProxyType(kwargs),
        reasoning_format=s.str_("reasoning_format"),
        reasoning=reasoning,
        reasoning_budget=s.int_("reasoning_budget"),
        reasoning_budget_message=s.opt_str("reasoning_budget_message"),
        skip_chat_parsing=s.bool_("skip_chat_parsing"),
        prefill_assistant=s.bool_("prefill_assistant"),
    )


def _net(s: Settings) -> ServerNetConfig:
    key_file, cert_file = s.opt_str("ssl_key_file"), s.opt_str("ssl_cert_file")
    if (key_file is None) != (cert_file is None):
        raise ConfigError("TLS needs both --ssl-key-file and --ssl-cert-file")
    return ServerNetConfig(
        hosts=s.strs("hosts"),
        port=s.int_("port"),
        grpc_port=s.int_("grpc_port"),
        api_prefix=s.str_("api_prefix").rstrip("/"),
        api_keys=tuple(dict.fromkeys(s.strs("api_keys") + s.strs("api_key_file_keys"))),
        ssl_key_file=key_file,
        ssl_cert_file=cert_file,
        timeout=s.int_("timeout"),
        drain_timeout=s.float_("drain_timeout"),
        sse_ping_interval=s.int_("sse_ping_interval"),
        cors_origins=s.str_("cors_origins"),
        cors_methods=s.str_("cors_methods"),
        cors_headers=s.str_("cors_headers"),
        cors_credentials=s.bool_("cors_credentials"),
        webui=s.bool_("webui"),
        static_path=s.str_("static_path") or None,
    )


def _endpoints(s: Settings, context: ContextConfig) -> EndpointConfig:
    return EndpointConfig(
        metrics=s.bool_("metrics"),
        slots=s.bool_("slots"),
        props=s.bool_("props"),
        slot_save_path=s.opt_str("slot_save_path"),
        slot_prompt_similarity=s.float_("slot_prompt_similarity"),
        max_queue=s.int_("max_queue"),
        reranking=context.pooling == "rank" and s.bool_("reranking"),
        cache_prompt=s.bool_("cache_prompt"),
        special=s.bool_("special"),
        spm_infill=s.bool_("spm_infill"),
        embd_normalize=s.int_("embd_normalize"),
        cache_reuse=s.int_("cache_reuse"),
    )
