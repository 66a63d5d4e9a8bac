"""Flag table, part 4: llama-server flags we accept with a notice, and flags we refuse.

Rule of thumb: a flag that only tunes something we do not have (web UI, CPU pinning, a draft
model's threads and placement, multimodal limits) is ACCEPTED with a notice, so existing launch
scripts keep working; a flag that asks for a capability we lack (downloads, lookup caches,
multimodal projectors, router mode, agent tools, device or tensor placement) is REFUSED, so
nobody gets a
silently different server. The negative spelling of a refused toggle (`--no-agent`) asks for
nothing and is accepted.
"""

from __future__ import annotations

from typing import Any

from service.cli_flags import values as v
from service.cli_flags.spec import FlagSpec, accepted, implemented, refused

CPU = "CPU affinity and scheduling"
WEB_UI = "Web UI"
CACHING = "Caching and checkpoints"
MISC = "Other compatibility flags"
SPEC_TUNING = "Speculative decoding tuning"
MEDIA_TUNING = "Multimodal tuning"

DOWNLOADS = "Model downloads"
PLACEMENT = "Device and tensor placement"
SPECULATIVE = "Speculative decoding"
MULTIMODAL = "Multimodal"
ROUTER = "Router mode"
AGENT = "Agent tools and MCP"
OTHER = "Other"

_CPU_WHY = "ggml's CPU threads run with default affinity, priority and polling here"
_UI_WHY = "the web page (rest_bridge/webui) has no settings to configure"
_SPEC_WHY = ("no effect: llama-grpc-server's speculative decoding (-md, --spec-type ngram-simple; "
             "docs/api.md) runs the draft on the target's threads and placement with an F16 "
             "cache, and has no other drafting kinds to tune")
_LOOKUP_WHY = ("lookup caches (ngram-cache) are not supported; --spec-type ngram-simple looks "
               "up the request's own tokens")
_SIMPLE_HITS_WHY = "ngram-simple does not use it (nor does llama-server's)"
_MEDIA_WHY = "multimodal input is not supported, so this setting has no effect"
_DOWNLOAD_WHY = "llama-grpc-server never downloads models; pass a local GGUF with -m"
_PLACEMENT_WHY = "explicit device and tensor placement is not supported; use -ngl/-sm/-mg/-ts"
_ROUTER_WHY = "router (multi-model) mode is not supported; start one server per model with -m"
_AGENT_WHY = "built-in agent tools and MCP servers are not provided"


def _acc(names: tuple[str, ...], group: str, reason: str, **kw: Any) -> FlagSpec:
    return accepted(names, group, reason, **kw)


def _ref(names: tuple[str, ...], group: str, reason: str, **kw: Any) -> FlagSpec:
    return refused(names, group, reason, **kw)


def _static_path(path: str) -> str:
    return path and v.parse_directory(path)  # llama-server's default, "", serves the page


# The REST bridge serves them (rest_bridge/routes_webui.py): our own page, not llama-server's.
WEB_UI_FLAGS: tuple[FlagSpec, ...] = (
    implemented(("--ui", "--webui"), "webui", WEB_UI,
                "serve the web page (a chat in the browser) at / on the HTTP port",
                negative=("--no-ui", "--no-webui"), env=("LLAMA_ARG_UI",),
                negative_env=("LLAMA_ARG_NO_WEBUI",), default=True),
    implemented(("--path",), "static_path", WEB_UI,
                "serve this directory's static files at / instead of the web page",
                metavar="PATH", env=("LLAMA_ARG_STATIC_PATH",), convert=_static_path,
                default="", default_text="none"),
)

ACCEPTED_FLAGS: tuple[FlagSpec, ...] = (
    _acc(("-C", "--cpu-mask"), CPU, _CPU_WHY, metavar="M"),
    _acc(("-Cr", "--cpu-range"), CPU, _CPU_WHY, metavar="lo-hi"),
    _acc(("--cpu-strict",), CPU, _CPU_WHY, metavar="<0|1>"),
    _acc(("--prio",), CPU, _CPU_WHY, metavar="N"),
    _acc(("--poll",), CPU, _CPU_WHY, metavar="<0...100>"),
    _acc(("-Cb", "--cpu-mask-batch"), CPU, _CPU_WHY, metavar="M"),
    _acc(("-Crb", "--cpu-range-batch"), CPU, _CPU_WHY, metavar="lo-hi"),
    _acc(("--cpu-strict-batch",), CPU, _CPU_WHY, metavar="<0|1>"),
    _acc(("--prio-batch",), CPU, _CPU_WHY, metavar="N"),
    _acc(("--poll-batch",), CPU, _CPU_WHY, metavar="<0|1>"),
    _acc(("--numa",), CPU, "NUMA strategies are not applied", metavar="TYPE",
         env=("LLAMA_ARG_NUMA",)),
    _acc(("--ui-config", "--webui-config"), WEB_UI, _UI_WHY, metavar="JSON",
         env=("LLAMA_ARG_UI_CONFIG",)),
    _acc(("--ui-config-file", "--webui-config-file"), WEB_UI, _UI_WHY, metavar="PATH",
         env=("LLAMA_ARG_UI_CONFIG_FILE",)),
    _acc(("--ui-mcp-proxy", "--webui-mcp-proxy"), WEB_UI, _UI_WHY,
         negative=("--no-ui-mcp-proxy", "--no-webui-mcp-proxy"), env=("LLAMA_ARG_UI_MCP_PROXY",)),
    _acc(("-cb", "--cont-batching"), MISC, "continuous batching is always on",
         negative=("-nocb", "--no-cont-batching"), env=("LLAMA_ARG_CONT_BATCHING",)),
    _acc(("--threads-http",), MISC,
         "HTTP is served by the asynchronous REST bridge, which has no thread pool to size",
         metavar="N", env=("LLAMA_ARG_THREADS_HTTP",)),
    _acc(("--reuse-port",), MISC, "port sharing is not configurable",
         env=("LLAMA_ARG_REUSE_PORT",)),
    _acc(("--offline",), MISC, "llama-grpc-server never uses the network to fetch models",
         env=("LLAMA_ARG_OFFLINE",)),
    # HF_TOKEN is deliberately not read: it is a general Hugging Face variable, not a server flag.
    _acc(("-hft", "--hf-token"), MISC, "nothing is downloaded, so no token is needed",
         metavar="TOKEN"),
    _acc(("-fit", "--fit"), MISC,
         "settings are not adjusted to fit device memory; -c and -ngl are used as given",
         metavar="[on|off]", optional_value=True, const="on", env=("LLAMA_ARG_FIT",)),
    _acc(("-fitt", "--fit-target"), MISC, "there is no memory fitting; see --fit",
         metavar="MiB0,MiB1,MiB2,...", env=("LLAMA_ARG_FIT_TARGET",)),
    _acc(("-fitc", "--fit-ctx"), MISC, "there is no memory fitting; see --fit", metavar="N",
         env=("LLAMA_ARG_FIT_CTX",)),
    _acc(("-dt", "--defrag-thold"), MISC, "deprecated in llama.cpp; the KV cache needs no defrag",
         metavar="N", env=("LLAMA_ARG_DEFRAG_THOLD",)),
    _acc(("-dkvc", "--dump-kv-cache"), MISC, "KV cache dumps are not implemented"),
    _acc(("--verbose-prompt",), MISC, "the server has no command-line prompt to print"),
    _acc(("-e", "--escape"), MISC,
         "escape processing applies to llama.cpp's command-line prompts; requests are JSON",
         negative=("--no-escape",)),
    _acc(("-bs", "--backend-sampling"), MISC,
         "no effect: sampling always runs on the CPU, in libllama's sampler chains, a step's "
         "slots in parallel on --threads-sampling threads; llama.cpp's sampling in the "
         "backend (GPU) graph is not used", env=("LLAMA_ARG_BACKEND_SAMPLING",)),
    _acc(("--sleep-idle-seconds",), MISC, "the model stays loaded while the server runs",
         metavar="SECONDS"),
    _acc(("--log-jsonl",), MISC, "logs are plain text", negative=("--no-log-jsonl",),
         env=("LLAMA_ARG_LOG_JSONL",)),
    _acc(("--log-prompts-dir",), MISC, "prompt logging to files is not implemented",
         metavar="PATH"),
    _acc(("-ctxcp", "--ctx-checkpoints", "--swa-checkpoints"), CACHING,
         "context checkpoints are not created", metavar="N", env=("LLAMA_ARG_CTX_CHECKPOINTS",)),
    _acc(("-cms", "--checkpoint-min-step"), CACHING, "context checkpoints are not created",
         metavar="N", env=("LLAMA_ARG_CHECKPOINT_MIN_SPACING_NT",)),
    _acc(("-cram", "--cache-ram"), CACHING,
         "there is no host-memory prompt cache; prompts are reused from the slots' KV cache",
         metavar="N", env=("LLAMA_ARG_CACHE_RAM",)),
    _acc(("--cache-idle-slots",), CACHING, "there is no host-memory prompt cache; see --cache-ram",
         negative=("--no-cache-idle-slots",), env=("LLAMA_ARG_CACHE_IDLE_SLOTS",)),
    implemented(("--cache-reuse",), "cache_reuse", CACHING,
                "min chunk size to reuse from the cache via KV shifting, when the context can "
                "shift (0 = disabled); a request's n_cache_reuse overrides it",
                metavar="N", env=("LLAMA_ARG_CACHE_REUSE",), convert=v.parse_int, default=0,
                minimum=0),
    _acc(("--mmproj-auto",), MEDIA_TUNING, _MEDIA_WHY, negative=("--no-mmproj", "--no-mmproj-auto"),
         env=("LLAMA_ARG_MMPROJ_AUTO",)),
    implemented(("--mmproj-offload",), "mmproj_offload", MEDIA_TUNING,
                "whether to run the multimodal projector (--mmproj) on the GPU",
                negative=("--no-mmproj-offload",), env=("LLAMA_ARG_MMPROJ_OFFLOAD",),
                default=True),
    _acc(("-mmdev", "--mmproj-device"), MEDIA_TUNING, _MEDIA_WHY, metavar="DEVICE",
         env=("MTMD_BACKEND_DEVICE",)),
    _acc(("--image-min-tokens",), MEDIA_TUNING, _MEDIA_WHY, metavar="N",
         env=("LLAMA_ARG_IMAGE_MIN_TOKENS",)),
    _acc(("--image-max-tokens",), MEDIA_TUNING, _MEDIA_WHY, metavar="N",
         env=("LLAMA_ARG_IMAGE_MAX_TOKENS",)),
    _acc(("--mtmd-batch-max-tokens",), MEDIA_TUNING, _MEDIA_WHY, metavar="N",
         env=("LLAMA_ARG_MTMD_BATCH_MAX_TOKENS",)),
    _acc(("--video-fps",), MEDIA_TUNING, _MEDIA_WHY, metavar="N", env=("LLAMA_ARG_VIDEO_FPS",)),
    _acc(("--video-timestamp-interval",), MEDIA_TUNING, _MEDIA_WHY, metavar="N",
         env=("LLAMA_ARG_VIDEO_TIMESTAMP_INTERVAL",)),
    _acc(("--video-ffmpeg-dir",), MEDIA_TUNING, _MEDIA_WHY, metavar="DIR",
         env=("LLAMA_ARG_VIDEO_FFMPEG_DIR",)),
    _acc(("--media-path",), MEDIA_TUNING, _MEDIA_WHY, metavar="PATH"),
    _acc(("--spec-draft-threads", "-td", "--threads-draft"), SPEC_TUNING, _SPEC_WHY,
         metavar="N"),
    _acc(("--spec-draft-threads-batch", "-tbd", "--threads-batch-draft"), SPEC_TUNING, _SPEC_WHY,
         metavar="N"),
    _acc(("--spec-draft-cpu-mask", "-Cd", "--cpu-mask-draft"), SPEC_TUNING, _SPEC_WHY,
         metavar="M"),
    _acc(("--spec-draft-cpu-range", "-Crd", "--cpu-range-draft"), SPEC_TUNING, _SPEC_WHY,
         metavar="lo-hi"),
    _acc(("--spec-draft-cpu-strict", "--cpu-strict-draft"), SPEC_TUNING, _SPEC_WHY,
         metavar="<0|1>"),
    _acc(("--spec-draft-prio", "--prio-draft"), SPEC_TUNING, _SPEC_WHY, metavar="N"),
    _acc(("--spec-draft-poll", "--poll-draft"), SPEC_TUNING, _SPEC_WHY, metavar="<0|1>"),
    _acc(("--spec-draft-cpu-mask-batch", "-Cbd", "--cpu-mask-batch-draft"), SPEC_TUNING,
         _SPEC_WHY, metavar="M"),
    _acc(("--spec-draft-cpu-strict-batch", "--cpu-strict-batch-draft"), SPEC_TUNING, _SPEC_WHY,
         metavar="<0|1>"),
    _acc(("--spec-draft-prio-batch", "--prio-batch-draft"), SPEC_TUNING, _SPEC_WHY, metavar="N"),
    _acc(("--spec-draft-poll-batch", "--poll-batch-draft"), SPEC_TUNING, _SPEC_WHY,
         metavar="<0|1>"),
    _acc(("--spec-draft-type-k", "-ctkd", "--cache-type-k-draft"), SPEC_TUNING, _SPEC_WHY,
         metavar="TYPE", env=("LLAMA_ARG_SPEC_DRAFT_CACHE_TYPE_K",)),
    _acc(("--spec-draft-type-v", "-ctvd", "--cache-type-v-draft"), SPEC_TUNING, _SPEC_WHY,
         metavar="TYPE", env=("LLAMA_ARG_SPEC_DRAFT_CACHE_TYPE_V",)),
    _acc(("--spec-draft-override-tensor", "-otd", "--override-tensor-draft"), SPEC_TUNING,
         _SPEC_WHY, metavar="<tensor name pattern>=<buffer type>,..."),
    _acc(("--spec-draft-cpu-moe", "-cmoed", "--cpu-moe-draft"), SPEC_TUNING, _SPEC_WHY,
         env=("LLAMA_ARG_SPEC_DRAFT_CPU_MOE",)),
    _acc(("--spec-draft-n-cpu-moe", "--spec-draft-ncmoe", "-ncmoed", "--n-cpu-moe-draft"),
         SPEC_TUNING, _SPEC_WHY, metavar="N", env=("LLAMA_ARG_SPEC_DRAFT_N_CPU_MOE",)),
    _acc(("--spec-synth-len",), SPEC_TUNING, _SPEC_WHY, metavar="L",
         env=("LLAMA_ARG_SPEC_SYNTH_LEN",)),
    _acc(("--spec-synth-rates",), SPEC_TUNING, _SPEC_WHY, metavar="P0,P1,...",
         env=("LLAMA_ARG_SPEC_SYNTH_RATES",)),
    _acc(("--spec-draft-p-split", "--draft-p-split"), SPEC_TUNING, _SPEC_WHY, metavar="P",
         env=("LLAMA_ARG_SPEC_DRAFT_P_SPLIT",)),
    _acc(("--spec-draft-backend-sampling",), SPEC_TUNING, _SPEC_WHY,
         negative=("--no-spec-draft-backend-sampling",),
         env=("LLAMA_ARG_SPEC_DRAFT_BACKEND_SAMPLING",)),
    _acc(("--spec-draft-device", "-devd", "--device-draft"), SPEC_TUNING, _SPEC_WHY,
         metavar="<dev1,dev2,..>"),
    _acc(("--spec-ngram-simple-min-hits",), SPEC_TUNING, _SIMPLE_HITS_WHY, metavar="N"),
    *(
        _acc((name,), SPEC_TUNING, _SPEC_WHY, metavar="N")
        for name in (
            "--spec-ngram-mod-n-min", "--spec-ngram-mod-n-max", "--spec-ngram-mod-n-match",
            "--spec-ngram-map-k-size-n",
            "--spec-ngram-map-k-size-m", "--spec-ngram-map-k-min-hits",
            "--spec-ngram-map-k4v-size-n", "--spec-ngram-map-k4v-size-m",
            "--spec-ngram-map-k4v-min-hits", "--spec-ngram-size-n", "--spec-ngram-size-m",
            "--spec-ngram-min-hits",
        )
    ),
)  # fmt: skip

REFUSED_FLAGS: tuple[FlagSpec, ...] = (
    _ref(("-mu", "--model-url"), DOWNLOADS, _DOWNLOAD_WHY, metavar="MODEL_URL",
         env=("LLAMA_ARG_MODEL_URL",)),
    _ref(("-dr", "--docker-repo"), DOWNLOADS, _DOWNLOAD_WHY, metavar="[<repo>/]<model>[:quant]",
         env=("LLAMA_ARG_DOCKER_REPO",)),
    _ref(("-hf", "-hfr", "--hf-repo"), DOWNLOADS, _DOWNLOAD_WHY, metavar="<user>/<model>[:quant]",
         env=("LLAMA_ARG_HF_REPO",)),
    _ref(("-hff", "--hf-file"), DOWNLOADS, _DOWNLOAD_WHY, metavar="FILE",
         env=("LLAMA_ARG_HF_FILE",)),
    _ref(("-cl", "--cache-list"), DOWNLOADS, "there is no download cache to list"),
    *(
        _ref((name,), DOWNLOADS, "model presets download weights; " + _DOWNLOAD_WHY)
        for name in (
            "--embd-gemma-default", "--fim-qwen-1.5b-default", "--fim-qwen-3b-default",
            "--fim-qwen-7b-default", "--fim-qwen-7b-spec", "--fim-qwen-14b-spec",
            "--fim-qwen-30b-default", "--gpt-oss-20b-default", "--gpt-oss-120b-default",
            "--vision-gemma-4b-default", "--vision-gemma-12b-default",
        )
    ),
    _ref(("-dev", "--device"), PLACEMENT, _PLACEMENT_WHY, metavar="<dev1,dev2,..>",
         env=("LLAMA_ARG_DEVICE",)),
    _ref(("--list-devices",), PLACEMENT, "device listing is not provided"),
    _ref(("--rpc",), PLACEMENT, "RPC backends are not supported", metavar="SERVERS",
         env=("LLAMA_ARG_RPC",)),
    _ref(("-ot", "--override-tensor"), PLACEMENT, _PLACEMENT_WHY,
         metavar="<tensor name pattern>=<buffer type>,...", env=("LLAMA_ARG_OVERRIDE_TENSOR",)),
    _ref(("-cmoe", "--cpu-moe"), PLACEMENT, _PLACEMENT_WHY, env=("LLAMA_ARG_CPU_MOE",)),
    _ref(("-ncmoe", "--n-cpu-moe"), PLACEMENT, _PLACEMENT_WHY, metavar="N",
         env=("LLAMA_ARG_N_CPU_MOE",)),
    _ref(("-ncffn", "--n-cpu-ffn"), PLACEMENT, _PLACEMENT_WHY, metavar="N",
         env=("LLAMA_ARG_N_CPU_FFN",)),
    _ref(("--override-kv",), OTHER, "model metadata overrides are not supported",
         metavar="KEY=TYPE:VALUE,..."),
    _ref(("--control-vector",), OTHER, "control vectors are not supported", metavar="FNAME"),
    _ref(("--control-vector-scaled",), OTHER, "control vectors are not supported",
         metavar="FNAME:SCALE,...", nargs="+"),
    _ref(("--control-vector-layer-range",), OTHER, "control vectors are not supported",
         metavar="START END", nargs=2),
    _ref(("--completion-bash",), OTHER, "no bash completion script is provided"),
    _ref(("--spec-draft-hf", "-hfd", "-hfrd", "--hf-repo-draft"), SPECULATIVE,
         "draft models are not downloaded; pass a local GGUF with -md",
         metavar="<user>/<model>[:quant]", env=("LLAMA_ARG_SPEC_DRAFT_HF_REPO",)),
    _ref(("--spec-default",), SPECULATIVE,
         "it turns on ngram-mod, which is not supported; --spec-type ngram-simple is"),
    _ref(("-lcs", "--lookup-cache-static"), SPECULATIVE, _LOOKUP_WHY,
         metavar="FNAME"),
    _ref(("-lcd", "--lookup-cache-dynamic"), SPECULATIVE, _LOOKUP_WHY,
         metavar="FNAME"),
    _ref(("-mmu", "--mmproj-url"), MULTIMODAL,
         "multimodal projectors are neither downloaded nor supported", metavar="URL",
         env=("LLAMA_ARG_MMPROJ_URL",)),
    _ref(("--models-dir",), ROUTER, _ROUTER_WHY, metavar="PATH", env=("LLAMA_ARG_MODELS_DIR",)),
    _ref(("--models-preset",), ROUTER, _ROUTER_WHY, metavar="PATH",
         env=("LLAMA_ARG_MODELS_PRESET",)),
    _ref(("--models-max",), ROUTER, _ROUTER_WHY, metavar="N", env=("LLAMA_ARG_MODELS_MAX",)),
    _ref(("--models-autoload",), ROUTER, _ROUTER_WHY, negative=("--no-models-autoload",),
         env=("LLAMA_ARG_MODELS_AUTOLOAD",)),
    _ref(("--tools",), AGENT, _AGENT_WHY, metavar="TOOL1,TOOL2,...", env=("LLAMA_ARG_TOOLS",)),
    _ref(("--tools-runtime",), AGENT, _AGENT_WHY, metavar="OPTION",
         env=("LLAMA_ARG_TOOLS_RUNTIME",)),
    _ref(("--mcp-servers-config",), AGENT, _AGENT_WHY, metavar="PATH",
         env=("LLAMA_ARG_MCP_SERVERS_CONFIG",)),
    _ref(("--mcp-servers-json",), AGENT, _AGENT_WHY, metavar="JSON",
         env=("LLAMA_ARG_MCP_SERVERS_JSON",)),
    _ref(("-ag", "--agent"), AGENT, _AGENT_WHY, negative=("-no-ag", "--no-agent"),
         env=("LLAMA_ARG_AGENT",)),
)  # fmt: skip
