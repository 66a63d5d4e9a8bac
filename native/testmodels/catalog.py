"""The named test models: what each is made from, and how to make it.

Each entry's cache-key parameters include GENERATOR_VERSION and the pinned llama.cpp version
(the source of vocabularies and templates): bump GENERATOR_VERSION whenever a change to the
generators would change the bytes they write.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from native import paths
from native.testmodels import bert_convert, bert_reranker, kquant_llama, sources
from native.testmodels.random_audio import AudioSpec, write_random_audio
from native.testmodels.random_clip import ClipSpec, write_random_clip
from native.testmodels.random_llama import LlamaSpec, write_random_llama
from native.testmodels.random_lora import LoraSpec, write_random_lora

GENERATOR_VERSION = 1

LLAMA3_TEMPLATE = "meta-llama-Llama-3.1-8B-Instruct"
MISTRAL_TEMPLATE = "mistralai-Mistral-Nemo-Instruct-2407"

TINY_BPE = LlamaSpec(
    general_name="llama-grpc tiny-bpe (random weights)",
    vocab="llama-bpe",
    template=LLAMA3_TEMPLATE,
    n_embd=64,
    n_layer=2,
    n_head=4,
    n_head_kv=2,
    n_ff=128,
    n_ctx_train=4096,
    rope_freq_base=500000.0,
    rms_norm_eps=1e-5,
    tied_embeddings=True,
    embedding_type="Q8_0",
    weight_type="F16",
    seed=1,
)

# The same tiny shape around Llama 2's SPM vocabulary and a Mistral template.
TINY_SPM = dataclasses.replace(
    TINY_BPE,
    general_name="llama-grpc tiny-spm (random weights)",
    vocab="llama-spm",
    template=MISTRAL_TEMPLATE,
    rope_freq_base=10000.0,
    seed=2,
)

# Fill-in-the-middle models (Infill): StarCoder's vocabulary has FIM prefix/suffix/middle and
# also <repo_name> (5) and <file_sep> (6), which llama.cpp does not pick up by name: named here,
# they give the repo-level layout. DeepSeek Coder's has prefix/suffix/middle only, and a BOS.
TINY_FIM_REPO = dataclasses.replace(
    TINY_BPE,
    general_name="llama-grpc tiny-fim-repo (random weights)",
    vocab="starcoder",
    token_ids=(("fim_rep_token_id", 5), ("fim_sep_token_id", 6)),
    seed=5,
)
TINY_FIM = dataclasses.replace(
    TINY_BPE,
    general_name="llama-grpc tiny-fim (random weights)",
    vocab="deepseek-coder",
    seed=6,
)

# Speculative decoding's draft for tiny-bpe: the same vocabulary and seed with one layer of two.
# Tensors are seeded by name, so its embeddings and first layer are tiny-bpe's own: it agrees with
# the target often, not always (the disagreeing draft). The agreeing draft, the upper bound, is
# tiny-bpe itself (`-md` naming the target's file).
TINY_BPE_DRAFT = dataclasses.replace(
    TINY_BPE,
    general_name="llama-grpc tiny-bpe-draft (random weights, 1 layer)",
    n_layer=1,
)

# A target whose greedy output repeats itself (flat attention: the docstring of random_llama
# says why), for n-gram drafting (--spec-type ngram-simple), which needs repeated text.
TINY_BPE_LOOP = dataclasses.replace(
    TINY_BPE,
    general_name="llama-grpc tiny-bpe-loop (random weights, repetitive)",
    attention_gain=1.0,
    seed=7,
)

# The cheap draft that agrees (speculative decoding's upper bound at a real saving): spm-deep is
# spm-deep-draft's two layers (the same seed: tensors are seeded by name) plus 22 inert ones
# (zero attn_output and ffn_down: random_llama's `inert_from`), so both compute the same logits
# and greedy outputs agree token for token, while the target costs ~9x the draft per token
# (measured on this 2-core machine, one thread: 6.3 ms against 0.7). Llama 2's 32k vocabulary
# keeps the output head small beside the layers; n_embd 256 makes the layers count.
SPM_DEEP_DRAFT = dataclasses.replace(
    TINY_SPM,
    general_name="llama-grpc spm-deep-draft (random weights, 2 layers)",
    n_embd=256,
    n_head=4,
    n_head_kv=2,
    n_ff=1024,
    seed=11,
)
SPM_DEEP = dataclasses.replace(
    SPM_DEEP_DRAFT,
    general_name="llama-grpc spm-deep (random weights, 2 layers + 22 inert)",
    n_layer=24,
    inert_from=2,
)

# SmolLM2-135M's shape with Llama 3's 128k vocabulary and an untied output matrix: ~254M params.
BENCH = LlamaSpec(
    general_name="llama-grpc bench (random weights, SmolLM2-135M shape)",
    vocab="llama-bpe",
    template=LLAMA3_TEMPLATE,
    n_embd=576,
    n_layer=30,
    n_head=9,
    n_head_kv=3,
    n_ff=1536,
    n_ctx_train=8192,
    rope_freq_base=100000.0,
    rms_norm_eps=1e-5,
    tied_embeddings=False,
    embedding_type="Q8_0",
    weight_type="Q8_0",
    seed=3,
)

# GPU benchmark models (issue 26): Llama-3.2-1B's and Llama-3.1-8B's shapes in Q4_K_M's mix of
# k-quants, random blocks written directly (kquant_llama: seconds, bounded by the disk; 0.8 and
# 4.9 GB). The 1B ties its output to the embeddings as Llama-3.2-1B does. No rope scaling
# (Llama 3.1's rope_freqs tensor): it changes nothing at the benchmark's context lengths.
LLAMA_1B = dataclasses.replace(
    BENCH,
    general_name="llama-grpc 1b (random Q4_K_M blocks, Llama-3.2-1B shape)",
    n_embd=2048,
    n_layer=16,
    n_head=32,
    n_head_kv=8,
    n_ff=8192,
    n_ctx_train=131072,
    rope_freq_base=500000.0,
    tied_embeddings=True,
    embedding_type=kquant_llama.MIX,
    weight_type=kquant_llama.MIX,
    seed=12,
)
LLAMA_8B = dataclasses.replace(
    LLAMA_1B,
    general_name="llama-grpc 8b (random Q4_K_M blocks, Llama-3.1-8B shape)",
    n_embd=4096,
    n_layer=32,
    n_ff=14336,
    tied_embeddings=False,
    seed=13,
)


@dataclass(frozen=True)
class ModelRecipe:
    """How to make one named model: its cache-key parameters and a writer taking the out path."""

    parameters: Callable[[], dict[str, object]]
    write: Callable[[Path], None]


def _llama_recipe(spec: LlamaSpec) -> ModelRecipe:
    def parameters() -> dict[str, object]:
        return {
            "generator": GENERATOR_VERSION,
            "llama_cpp": paths.LLAMA_CPP_PYTHON_VERSION,
            **spec.key_parameters(),
        }

    return ModelRecipe(parameters, lambda out: write_random_llama(spec, out))


def _kquant_recipe(spec: LlamaSpec) -> ModelRecipe:
    def parameters() -> dict[str, object]:
        return {**_llama_recipe(spec).parameters(), "writer": "kquant_llama"}

    return ModelRecipe(parameters, lambda out: kquant_llama.write_kquant_llama(spec, out))


def _minilm_parameters() -> dict[str, object]:
    return {
        "generator": GENERATOR_VERSION,
        "source": sources.MINILM_DISTRIBUTION,
        "source_version": sources.minilm_version(),
    }


def _write_minilm(out: Path) -> None:
    bert_convert.convert_bert(sources.minilm_dir(), out, "all-MiniLM-L6-v2")


def _reranker_parameters() -> dict[str, object]:
    return {**_minilm_parameters(), "head_seed": bert_reranker.HEAD_SEED}


def _write_reranker(out: Path) -> None:
    bert_reranker.write_reranker(sources.minilm_dir(), out, n_embd=384)


# A LoRA adapter for tiny-bpe (GET /lora-adapters, per-request `lora`).
TINY_BPE_LORA = LoraSpec(base=TINY_BPE, rank=4, targets=("attn_q", "attn_v", "ffn_up", "ffn_down"),
                         seed=4)


def _lora_recipe(spec: LoraSpec) -> ModelRecipe:
    def parameters() -> dict[str, object]:
        return {
            "generator": GENERATOR_VERSION,
            "llama_cpp": paths.LLAMA_CPP_PYTHON_VERSION,
            **spec.key_parameters(),
        }

    return ModelRecipe(parameters, lambda out: write_random_lora(spec, out))


# A multimodal projector (--mmproj) for tiny-bpe: together a tiny vision-language model. A 32 x 32
# image in 8 x 8 patches is 16 embeddings (random_clip's docstring says why this projector type).
TINY_VL_MMPROJ = ClipSpec(
    general_name="llama-grpc tiny-vl-mmproj (random weights, LLaVA mlp)",
    n_embd_text=TINY_BPE.n_embd,
    n_embd=32,
    n_head=4,
    n_ff=48,
    n_layer=2,
    image_size=32,
    patch_size=8,
    n_mm_hidden=64,
    seed=8,
)
# The same projector for a text model twice as wide: for no model here (the mismatch test).
TINY_VL_MMPROJ_WIDE = dataclasses.replace(
    TINY_VL_MMPROJ,
    general_name="llama-grpc tiny-vl-mmproj-wide (random weights, n_embd 128)",
    n_embd_text=2 * TINY_BPE.n_embd,
)


def _clip_recipe(spec: ClipSpec) -> ModelRecipe:
    def parameters() -> dict[str, object]:
        return {"generator": GENERATOR_VERSION, "llama_cpp": paths.LLAMA_CPP_PYTHON_VERSION,
                **spec.key_parameters()}

    return ModelRecipe(parameters, lambda out: write_random_clip(spec, out))


# An audio projector (--mmproj) for tiny-bpe: Qwen2-Audio's type (random_audio's docstring says
# why). Every started 30 s of audio is 750 embeddings, whatever the widths.
TINY_AUDIO_MMPROJ = AudioSpec(
    general_name="llama-grpc tiny-audio-mmproj (random weights, qwen2a)",
    n_embd_text=TINY_BPE.n_embd,
    n_embd=16,
    n_head=2,
    n_ff=32,
    n_layer=1,
    n_mel=16,
    seed=9,
)


def _audio_recipe(spec: AudioSpec) -> ModelRecipe:
    def parameters() -> dict[str, object]:
        return {"generator": GENERATOR_VERSION, "llama_cpp": paths.LLAMA_CPP_PYTHON_VERSION,
                **spec.key_parameters()}

    return ModelRecipe(parameters, lambda out: write_random_audio(spec, out))


RECIPES: dict[str, ModelRecipe] = {
    "tiny-bpe": _llama_recipe(TINY_BPE),
    "tiny-spm": _llama_recipe(TINY_SPM),
    "bench": _llama_recipe(BENCH),
    "1b": _kquant_recipe(LLAMA_1B),
    "8b": _kquant_recipe(LLAMA_8B),
    "minilm": ModelRecipe(_minilm_parameters, _write_minilm),
    "tiny-bpe-lora": _lora_recipe(TINY_BPE_LORA),
    "tiny-bpe-draft": _llama_recipe(TINY_BPE_DRAFT),
    "tiny-bpe-loop": _llama_recipe(TINY_BPE_LOOP),
    "spm-deep": _llama_recipe(SPM_DEEP),
    "spm-deep-draft": _llama_recipe(SPM_DEEP_DRAFT),
    "tiny-fim-repo": _llama_recipe(TINY_FIM_REPO),
    "tiny-fim": _llama_recipe(TINY_FIM),
    # MiniLM's encoder and WordPiece vocabulary with a random classifier head, rank pooling.
    "minilm-reranker": ModelRecipe(_reranker_parameters, _write_reranker),
    "tiny-vl-mmproj": _clip_recipe(TINY_VL_MMPROJ),
    "tiny-vl-mmproj-wide": _clip_recipe(TINY_VL_MMPROJ_WIDE),
    "tiny-audio-mmproj": _audio_recipe(TINY_AUDIO_MMPROJ),
}
