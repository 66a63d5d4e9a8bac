"""Flag table, part 1: the model, where it lives, and the llama context built around it.

Names, environment variables, defaults and value syntax follow llama-server (the spec's README and
today's tools/server/README.md + common/arg.cpp of the pinned llama.cpp). `dest` is the setting
name that service.config reads. --threads-sampling is ours (llama-server samples on one thread).
"""

from __future__ import annotations

from service.cli_flags import values as v
from service.cli_flags.spec import FlagSpec, implemented, planned

GENERAL = "General"
MODEL = "Model and adapters"
PLACEMENT = "Devices and memory"
CONTEXT = "Context, batching and KV cache"
ROPE = "RoPE and YaRN"
THREADS = "CPU threads"

_LOAD_MODES = ("auto", "none", "mmap", "mlock", "mmap+mlock", "dio")

MODEL_FLAGS: tuple[FlagSpec, ...] = (
    implemented(("-h", "--help", "--usage"), "help", GENERAL, "print usage and exit"),
    implemented(("--version",), "version", GENERAL, "show version and exit"),
    implemented(
        ("-m", "--model"), "model_path", MODEL, "model path (GGUF) to load",
        metavar="FNAME", env=("LLAMA_ARG_MODEL",), default_text="required",
    ),
    implemented(
        ("-mm", "--mmproj"), "mmproj", MODEL,
        "path to a multimodal projector file (GGUF) for the model: images and audio in "
        "prompts (docs/multimodal.md)", metavar="FILE", env=("LLAMA_ARG_MMPROJ",),
    ),
    implemented(
        ("-a", "--alias"), "aliases", MODEL,
        "model name aliases, comma-separated (the model's names in the API)",
        metavar="STRING", env=("LLAMA_ARG_ALIAS",), convert=v.parse_csv, repeat=True, default=(),
        default_text="the model path",
    ),
    planned(
        ("--tags",), "tags", MODEL, "model tags, comma-separated (informational)",
        "the model list (ListModels, /v1/models) does not report tags yet",
        metavar="STRING", env=("LLAMA_ARG_TAGS",), convert=v.parse_csv, repeat=True, default=(),
        default_text="none",
    ),
    implemented(
        ("--lora",), "lora", MODEL,
        "path to LoRA adapter (comma-separated or repeated for several)",
        metavar="FNAME", convert=v.parse_lora_paths, repeat=True, default=(), default_text="none",
    ),
    implemented(
        ("--lora-scaled",), "lora", MODEL,
        "LoRA adapter with a scale: FNAME:SCALE,... (or the older FNAME SCALE)",
        metavar="FNAME:SCALE,...", convert=v.parse_lora_scaled,
        convert_tokens=v.parse_lora_scaled_tokens, nargs="+", repeat=True, default=(),
        default_text="none",
    ),
    implemented(
        ("--lora-init-without-apply",), "lora_init_without_apply", MODEL,
        "load LoRA adapters without applying them (apply later via POST /lora-adapters)",
        default=False,
    ),
    implemented(
        ("-ngl", "--gpu-layers", "--n-gpu-layers"), "n_gpu_layers", PLACEMENT,
        "max. number of layers to store in VRAM: a number, 'auto' or 'all'",
        metavar="N", env=("LLAMA_ARG_N_GPU_LAYERS",), convert=v.parse_gpu_layers,
        default=v.GPU_LAYERS_AUTO, default_text="auto",
    ),
    implemented(
        ("-sm", "--split-mode"), "split_mode", PLACEMENT,
        "how to split the model across GPUs: none, layer or row (tensor: experimental)",
        metavar="{none,layer,row,tensor}", env=("LLAMA_ARG_SPLIT_MODE",),
        convert=v.choice("none", "layer", "row", "tensor"), default="layer",
    ),
    implemented(
        ("-ts", "--tensor-split"), "tensor_split", PLACEMENT,
        "fraction of the model to offload to each GPU, e.g. 3,1",
        metavar="N0,N1,N2,...", env=("LLAMA_ARG_TENSOR_SPLIT",), convert=v.parse_tensor_split,
        default=(), default_text="even",
    ),
    implemented(
        ("-mg", "--main-gpu"), "main_gpu", PLACEMENT,
        "GPU for the model (split-mode none) or for intermediate results and KV (split-mode row)",
        metavar="INDEX", env=("LLAMA_ARG_MAIN_GPU",), convert=v.parse_int, default=0, minimum=0,
    ),
    implemented(
        ("-lm", "--load-mode"), "load_mode", PLACEMENT,
        "model loading mode: auto, none, mmap, mlock, mmap+mlock or dio",
        metavar="MODE", env=("LLAMA_ARG_LOAD_MODE",), convert=v.choice(*_LOAD_MODES),
        default="auto",
    ),
    implemented(
        ("--mlock",), "mlock", PLACEMENT,
        "keep the model in RAM (older spelling of --load-mode mlock / mmap+mlock)",
        env=("LLAMA_ARG_MLOCK",), default=False,
    ),
    implemented(
        ("--mmap",), "mmap", PLACEMENT,
        "memory-map the model, or not (older spelling of --load-mode mmap / none)",
        negative=("--no-mmap",), env=("LLAMA_ARG_MMAP",), default=None, default_text="auto",
    ),
    implemented(
        ("-lzm", "--lazy-mode"), "lazy_mode", PLACEMENT,
        "on-demand reading of some tensors (e.g. per-layer embeddings): on, off or auto",
        metavar="MODE", env=("LLAMA_ARG_LAZY_MODE",), convert=v.choice("on", "off", "auto"),
        default="auto",
    ),
    implemented(
        ("--check-tensors",), "check_tensors", PLACEMENT,
        "check model tensor data for invalid values", default=False,
    ),
    implemented(
        ("--repack",), "repack", PLACEMENT, "whether to repack weights for faster CPU kernels",
        negative=("-nr", "--no-repack"), env=("LLAMA_ARG_REPACK",), default=True,
    ),
    implemented(
        ("--no-host",), "no_host", PLACEMENT,
        "bypass the host buffer, allowing extra buffer types", env=("LLAMA_ARG_NO_HOST",),
        default=False,
    ),
    implemented(
        ("-kvo", "--kv-offload"), "kv_offload", PLACEMENT, "whether to offload the KV cache",
        negative=("-nkvo", "--no-kv-offload"), env=("LLAMA_ARG_KV_OFFLOAD",), default=True,
    ),
    implemented(
        ("--op-offload",), "op_offload", PLACEMENT,
        "whether to offload host tensor operations to the device",
        negative=("--no-op-offload",), default=True,
    ),
    implemented(
        ("-c", "--ctx-size"), "n_ctx", CONTEXT,
        "size of the prompt context, shared by all slots (0 = loaded from model)",
        metavar="N", env=("LLAMA_ARG_CTX_SIZE",), convert=v.parse_int, default=0, minimum=0,
    ),
    implemented(
        ("-b", "--batch-size"), "n_batch", CONTEXT, "logical maximum batch size",
        metavar="N", env=("LLAMA_ARG_BATCH",), convert=v.parse_int, default=2048, minimum=1,
    ),
    implemented(
        ("-ub", "--ubatch-size"), "n_ubatch", CONTEXT, "physical maximum batch size",
        metavar="N", env=("LLAMA_ARG_UBATCH",), convert=v.parse_int, default=512, minimum=1,
    ),
    implemented(
        ("-np", "--parallel"), "n_parallel", CONTEXT,
        "number of server slots (-1 = auto: 4 slots with a unified KV cache)",
        metavar="N", env=("LLAMA_ARG_N_PARALLEL",), convert=v.parse_int, default=-1,
        default_text="auto",
    ),
    implemented(
        ("-kvu", "--kv-unified"), "kv_unified", CONTEXT,
        "use one KV buffer shared by all sequences",
        negative=("-no-kvu", "--no-kv-unified"), env=("LLAMA_ARG_KV_UNIFIED",), default=False,
        default_text="on when --parallel is auto, else off",
    ),
    implemented(
        ("--kv-unified-per-slot",), "kv_unified_per_slot", CONTEXT,
        "context per slot; without -c the KV pool is sized to parallel * N (0 = unset)",
        metavar="N", env=("LLAMA_ARG_KV_UNIFIED_PER_SLOT",), convert=v.parse_int, default=0,
        minimum=0,
    ),
    implemented(
        ("--keep",), "n_keep", CONTEXT,
        "default number of prompt tokens kept on context shift (-1 = all)",
        metavar="N", convert=v.parse_int, default=0, minimum=-1,
    ),
    implemented(
        ("--context-shift",), "context_shift", CONTEXT,
        "whether to shift the context on infinite text generation",
        negative=("--no-context-shift",), env=("LLAMA_ARG_CONTEXT_SHIFT",), default=False,
    ),
    implemented(
        ("-fa", "--flash-attn"), "flash_attn", CONTEXT,
        "Flash Attention: on, off or auto (a bare -fa means on)",
        metavar="[on|off|auto]", optional_value=True, const="on", env=("LLAMA_ARG_FLASH_ATTN",),
        convert=v.parse_on_off_auto, default="auto",
    ),
    implemented(
        ("-ctk", "--cache-type-k"), "cache_type_k", CONTEXT,
        "KV cache data type for K: " + ", ".join(v.KV_CACHE_TYPES),
        metavar="TYPE", env=("LLAMA_ARG_CACHE_TYPE_K",), convert=v.parse_cache_type,
        default="f16",
    ),
    implemented(
        ("-ctv", "--cache-type-v"), "cache_type_v", CONTEXT,
        "KV cache data type for V: " + ", ".join(v.KV_CACHE_TYPES),
        metavar="TYPE", env=("LLAMA_ARG_CACHE_TYPE_V",), convert=v.parse_cache_type,
        default="f16",
    ),
    implemented(
        ("--swa-full",), "swa_full", CONTEXT, "use a full-size SWA cache",
        env=("LLAMA_ARG_SWA_FULL",), default=False,
    ),
    implemented(
        ("--warmup",), "warmup", CONTEXT, "whether to warm the model up with an empty run",
        negative=("--no-warmup",), default=True,
    ),
    implemented(
        ("--perf",), "perf", CONTEXT, "whether to enable libllama's performance timings",
        negative=("--no-perf",), env=("LLAMA_ARG_PERF",), default=True,
    ),
    implemented(
        ("--embedding", "--embeddings"), "embeddings", CONTEXT,
        "restrict the server to embeddings (use with dedicated embedding models): the "
        "embedding endpoints are served, the generation endpoints answer 501 (--batch-size is "
        "lowered to --ubatch-size)",
        env=("LLAMA_ARG_EMBEDDINGS",), default=False,
    ),
    implemented(
        ("--rerank", "--reranking"), "reranking", CONTEXT,
        "enable the reranking endpoint (implies --embedding and --pooling rank)",
        env=("LLAMA_ARG_RERANKING",), default=False,
    ),
    implemented(
        ("--pooling",), "pooling", CONTEXT,
        "pooling type for embeddings (default: from model)",
        metavar="{none,mean,cls,last,rank}", env=("LLAMA_ARG_POOLING",),
        convert=v.choice("none", "mean", "cls", "last", "rank"), default=None,
        default_text="from model",
    ),
    implemented(
        ("--rope-scaling",), "rope_scaling", ROPE,
        "RoPE frequency scaling method (default: from model, else linear)",
        metavar="{none,linear,yarn}", env=("LLAMA_ARG_ROPE_SCALING_TYPE",),
        convert=v.choice("none", "linear", "yarn"), default=None, default_text="from model",
    ),
    implemented(
        ("--rope-scale",), "rope_freq_scale", ROPE,
        "RoPE context scaling factor: expands the context by N (sets --rope-freq-scale 1/N)",
        metavar="N", env=("LLAMA_ARG_ROPE_SCALE",), convert=lambda t: 1.0 / _positive(t),
        default=0.0, default_text="from model",
    ),
    implemented(
        ("--rope-freq-base",), "rope_freq_base", ROPE,
        "RoPE base frequency, used by NTK-aware scaling (0 = from model)",
        metavar="N", env=("LLAMA_ARG_ROPE_FREQ_BASE",), convert=v.parse_float, default=0.0,
        minimum=0.0, default_text="from model",
    ),
    implemented(
        ("--rope-freq-scale",), "rope_freq_scale", ROPE,
        "RoPE frequency scaling factor: expands the context by 1/N (0 = from model)",
        metavar="N", env=("LLAMA_ARG_ROPE_FREQ_SCALE",), convert=v.parse_float, default=0.0,
        minimum=0.0, default_text="from model",
    ),
    implemented(
        ("--yarn-orig-ctx",), "yarn_orig_ctx", ROPE,
        "YaRN: original context size of the model (0 = training context size)",
        metavar="N", env=("LLAMA_ARG_YARN_ORIG_CTX",), convert=v.parse_int, default=0, minimum=0,
    ),
    implemented(
        ("--yarn-ext-factor",), "yarn_ext_factor", ROPE,
        "YaRN: extrapolation mix factor (0.0 = full interpolation, negative = from model)",
        metavar="N", env=("LLAMA_ARG_YARN_EXT_FACTOR",), convert=v.parse_float, default=-1.0,
    ),
    implemented(
        ("--yarn-attn-factor",), "yarn_attn_factor", ROPE,
        "YaRN: scale sqrt(t) or attention magnitude (negative = from model)",
        metavar="N", env=("LLAMA_ARG_YARN_ATTN_FACTOR",), convert=v.parse_float, default=-1.0,
    ),
    implemented(
        ("--yarn-beta-slow",), "yarn_beta_slow", ROPE,
        "YaRN: high correction dim or alpha (negative = from model)",
        metavar="N", env=("LLAMA_ARG_YARN_BETA_SLOW",), convert=v.parse_float, default=-1.0,
    ),
    implemented(
        ("--yarn-beta-fast",), "yarn_beta_fast", ROPE,
        "YaRN: low correction dim or beta (negative = from model)",
        metavar="N", env=("LLAMA_ARG_YARN_BETA_FAST",), convert=v.parse_float, default=-1.0,
    ),
    implemented(
        ("-t", "--threads"), "n_threads", THREADS,
        "CPU threads for generation (<= 0 = number of physical cores)",
        metavar="N", env=("LLAMA_ARG_THREADS",), convert=v.parse_int, default=-1,
        default_text="physical cores",
    ),
    implemented(
        ("-tb", "--threads-batch"), "n_threads_batch", THREADS,
        "CPU threads for batch and prompt processing (<= 0 = same as --threads)",
        metavar="N", convert=v.parse_int, default=-1, default_text="same as --threads",
    ),
    implemented(
        ("--threads-sampling",), "n_threads_sampling", THREADS,
        "CPU threads that sample the slots' next tokens after each decode, in parallel "
        "(<= 0 = every CPU this process may use; llama-grpc-server only)",
        metavar="N", env=("LLAMA_ARG_THREADS_SAMPLING",), convert=v.parse_int, default=0,
        default_text="usable CPUs",
    ),
)  # fmt: skip


def _positive(text: str) -> float:
    value = v.parse_float(text)
    if value <= 0:
        raise ValueError("expected a number > 0")
    return value
