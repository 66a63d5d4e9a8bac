"""Flag table, part 5: speculative decoding (issue 20): a draft model (`-md`) and n-gram lookup
(`--spec-type ngram-simple`), with llama-server's names, defaults and bounds (the pinned
common/arg.cpp; `--draft-max` and `--draft-min`, which it has removed, are the spec README's
spellings of `--spec-draft-n-max` and `--spec-draft-n-min`)."""

from __future__ import annotations

from service.cli_flags import values as v
from service.cli_flags.spec import FlagSpec, implemented

SPECULATIVE = "Speculative decoding"


def _spec_types(text: str) -> str:
    from service.engine.speculative import parse_types  # a pure module (no native)

    return ",".join(parse_types(text)) or "none"


SPECULATIVE_FLAGS: tuple[FlagSpec, ...] = (
    implemented(("--spec-draft-model", "-md", "--model-draft"), "model_draft", SPECULATIVE,
                "draft model (GGUF) for speculative decoding; its vocabulary must be the "
                "target's (checked at start-up)", metavar="FNAME",
                env=("LLAMA_ARG_SPEC_DRAFT_MODEL", "LLAMA_ARG_MODEL_DRAFT"), default=None,
                default_text="unused"),
    implemented(("--spec-type",), "spec_type", SPECULATIVE,
                "comma-separated kinds of speculative decoding: draft-simple (the draft model, "
                "implied by -md), ngram-simple (prompt lookup in the request's own tokens, no "
                "second model), none; other llama-server kinds are refused",
                metavar="TYPES", env=("LLAMA_ARG_SPEC_TYPE",), convert=_spec_types,
                default="none"),
    implemented(("--spec-draft-n-max",), "draft_n_max", SPECULATIVE,
                "most tokens the draft model proposes per step (a request's speculative.n_max "
                "overrides it)", metavar="N", env=("LLAMA_ARG_SPEC_DRAFT_N_MAX",),
                convert=v.parse_int, default=3, minimum=0),
    implemented(("--draft", "--draft-n", "--draft-max"), "draft_n_max", SPECULATIVE,
                "the spec README's spelling of --spec-draft-n-max", metavar="N",
                env=("LLAMA_ARG_DRAFT_MAX",), convert=v.parse_int, default=3, minimum=0),
    implemented(("--spec-draft-n-min",), "draft_n_min", SPECULATIVE,
                "a shorter draft is not verified (speculative.n_min overrides it)",
                metavar="N", env=("LLAMA_ARG_SPEC_DRAFT_N_MIN",), convert=v.parse_int,
                default=0, minimum=0),
    implemented(("--draft-min", "--draft-n-min"), "draft_n_min", SPECULATIVE,
                "the spec README's spelling of --spec-draft-n-min", metavar="N",
                env=("LLAMA_ARG_DRAFT_MIN",), convert=v.parse_int, default=0, minimum=0),
    implemented(("--spec-draft-p-min", "--draft-p-min"), "draft_p_min", SPECULATIVE,
                "the draft model stops drafting when its best token's probability is below P "
                "(speculative.p_min overrides it)", metavar="P",
                env=("LLAMA_ARG_SPEC_DRAFT_P_MIN", "LLAMA_ARG_DRAFT_P_MIN"),
                convert=v.parse_finite_float, default=0.0, minimum=0.0, maximum=1.0),
    implemented(("--spec-draft-ngl", "-ngld", "--gpu-layers-draft", "--n-gpu-layers-draft"),
                "n_gpu_layers_draft", SPECULATIVE,
                "max. number of the draft model's layers to store in VRAM: a number, 'auto' "
                "or 'all'", metavar="N", env=("LLAMA_ARG_N_GPU_LAYERS_DRAFT",),
                convert=v.parse_gpu_layers, default=v.GPU_LAYERS_AUTO, default_text="auto"),
    implemented(("-cd", "--ctx-size-draft"), "ctx_size_draft", SPECULATIVE,
                "the draft model's context size (0: the target's)", metavar="N",
                env=("LLAMA_ARG_CTX_SIZE_DRAFT",), convert=v.parse_int, default=0, minimum=0),
    implemented(("--spec-ngram-simple-size-n",), "ngram_simple_size_n", SPECULATIVE,
                "ngram-simple: length of the n-gram looked up in the request's tokens",
                metavar="N", convert=v.parse_int, default=12, minimum=1, maximum=1024),
    implemented(("--spec-ngram-simple-size-m",), "ngram_simple_size_m", SPECULATIVE,
                "ngram-simple: most tokens drafted from what followed the n-gram",
                metavar="N", convert=v.parse_int, default=48, minimum=1, maximum=1024),
)  # fmt: skip
