"""The generated test models, read back with gguf's own reader: vocabularies copied exactly from
llama.cpp's vocab files, real chat templates, the intended shapes, and the cache behaviour.

No binding is needed: whether llama.cpp loads and runs these files is the binding's tests' job.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import gguf
import pytest

from native.testmodels import MODEL_NAMES, ensure_model, model_cache, model_path, sources
from native.testmodels.bert_convert import gguf_tensor_name
from native.testmodels.catalog import BENCH, RECIPES, TINY_BPE, TINY_SPM
from native.testmodels.random_llama import LlamaSpec, tensor_plans, write_random_llama

REPO_ROOT = Path(__file__).resolve().parent.parent
LLAMA3_VOCAB = 128256


def _kv(reader: Any, key: str) -> Any:
    return reader.fields[key].contents()


def _tokenizer_keys(reader: Any) -> set[str]:
    return {key for key in reader.fields if key.startswith("tokenizer.")}


def _assert_vocab_copied(model: Any, source: Any) -> None:
    """Every tokenizer.* field of the vocab file is in the model with the same types and value."""
    source_keys = _tokenizer_keys(source)
    assert _tokenizer_keys(model) == source_keys | {"tokenizer.chat_template"}
    for key in source_keys:
        assert model.fields[key].types == source.fields[key].types, key
        assert _kv(model, key) == _kv(source, key), key


def _assert_llama_shape(reader: Any, spec: LlamaSpec, n_vocab: int) -> None:
    assert _kv(reader, "general.architecture") == "llama"
    assert _kv(reader, "general.name") == spec.general_name
    expected = {
        "llama.embedding_length": spec.n_embd,
        "llama.block_count": spec.n_layer,
        "llama.attention.head_count": spec.n_head,
        "llama.attention.head_count_kv": spec.n_head_kv,
        "llama.feed_forward_length": spec.n_ff,
        "llama.context_length": spec.n_ctx_train,
        "llama.rope.dimension_count": spec.head_dim,
        "llama.vocab_size": n_vocab,
    }
    assert {key: _kv(reader, key) for key in expected} == expected
    assert _kv(reader, "llama.rope.freq_base") == pytest.approx(spec.rope_freq_base)
    assert _kv(reader, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(spec.rms_norm_eps)
    tensors = {t.name: t for t in reader.tensors}
    assert tensors["token_embd.weight"].shape.tolist() == [spec.n_embd, n_vocab]
    assert tensors["token_embd.weight"].tensor_type.name == spec.embedding_type
    assert ("output.weight" in tensors) is not spec.tied_embeddings
    kv_width = spec.n_head_kv * spec.head_dim
    assert tensors["blk.0.attn_k.weight"].shape.tolist() == [spec.n_embd, kv_width]
    last = spec.n_layer - 1
    assert tensors[f"blk.{last}.ffn_down.weight"].shape.tolist() == [spec.n_ff, spec.n_embd]
    assert tensors[f"blk.{last}.ffn_gate.weight"].tensor_type.name == spec.weight_type
    assert len(tensors) == 1 + 9 * spec.n_layer + 1 + (0 if spec.tied_embeddings else 1)


# --- tiny-spm: fast enough to read in full ---------------------------------------------------


@pytest.fixture(scope="module")
def tiny_spm_reader() -> Any:
    return gguf.GGUFReader(ensure_model("tiny-spm"))


def test_tiny_spm_vocab_is_the_llama_spm_vocab_file(tiny_spm_reader: Any) -> None:
    source = gguf.GGUFReader(sources.vocab_gguf("llama-spm"))
    _assert_vocab_copied(tiny_spm_reader, source)
    assert len(_kv(tiny_spm_reader, "tokenizer.ggml.tokens")) == 32000
    assert _kv(tiny_spm_reader, "tokenizer.ggml.model") == "llama"


def test_tiny_spm_has_the_mistral_template(tiny_spm_reader: Any) -> None:
    template = _kv(tiny_spm_reader, "tokenizer.chat_template")
    assert template == sources.chat_template(TINY_SPM.template)
    assert "[INST]" in template


def test_tiny_spm_shape(tiny_spm_reader: Any) -> None:
    _assert_llama_shape(tiny_spm_reader, TINY_SPM, 32000)
    assert Path(ensure_model("tiny-spm")).stat().st_size < 5_000_000


# --- tiny-bpe: GGUFReader needs ~10 s per file for 128k tokens and 280k merges ---------------


@pytest.fixture(scope="module")
def tiny_bpe_reader() -> Any:
    return gguf.GGUFReader(ensure_model("tiny-bpe"))


@pytest.mark.slow
def test_tiny_bpe_vocab_is_the_llama_bpe_vocab_file(tiny_bpe_reader: Any) -> None:
    source = gguf.GGUFReader(sources.vocab_gguf("llama-bpe"))
    _assert_vocab_copied(tiny_bpe_reader, source)
    assert len(_kv(tiny_bpe_reader, "tokenizer.ggml.merges")) == 280147
    assert _kv(tiny_bpe_reader, "tokenizer.ggml.pre") == "llama-bpe"


@pytest.mark.slow
def test_tiny_bpe_template_and_shape(tiny_bpe_reader: Any) -> None:
    template = _kv(tiny_bpe_reader, "tokenizer.chat_template")
    assert template == sources.chat_template(TINY_BPE.template)
    assert "<|start_header_id|>" in template
    _assert_llama_shape(tiny_bpe_reader, TINY_BPE, LLAMA3_VOCAB)
    assert Path(ensure_model("tiny-bpe")).stat().st_size < 20_000_000


# --- bench: shape checked from the plan; the 280 MB file only in a slow test -------------------


def test_bench_plan_has_smollm2_135m_shape_and_about_254m_params() -> None:
    plans = {plan.name: plan for plan in tensor_plans(BENCH, LLAMA3_VOCAB)}
    assert plans["blk.29.attn_q.weight"].shape == (576, 576)
    assert plans["blk.0.attn_k.weight"].shape == (3 * 64, 576)
    assert plans["blk.0.ffn_up.weight"].shape == (1536, 576)
    assert plans["output.weight"].shape == (LLAMA3_VOCAB, 576)
    assert "blk.30.attn_q.weight" not in plans
    n_params = sum(math.prod(plan.shape) for plan in plans.values())
    assert 250e6 < n_params < 260e6
    assert BENCH.n_ctx_train == 8192
    assert {plan.ggml_type for plan in plans.values() if len(plan.shape) == 2} == {"Q8_0"}


@pytest.mark.slow
def test_bench_file_matches_its_spec() -> None:
    path = ensure_model("bench")
    reader = gguf.GGUFReader(path)
    _assert_llama_shape(reader, BENCH, LLAMA3_VOCAB)
    assert 250e6 < path.stat().st_size < 300e6


# --- minilm: the one real model --------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_reader() -> Any:
    return gguf.GGUFReader(ensure_model("minilm"))


def test_minilm_hyperparameters_follow_config(minilm_reader: Any) -> None:
    config = json.loads((sources.minilm_dir() / "config.json").read_text(encoding="utf-8"))
    assert _kv(minilm_reader, "general.architecture") == "bert"
    assert _kv(minilm_reader, "bert.embedding_length") == config["hidden_size"] == 384
    assert _kv(minilm_reader, "bert.block_count") == config["num_hidden_layers"] == 6
    assert _kv(minilm_reader, "bert.attention.head_count") == config["num_attention_heads"]
    assert _kv(minilm_reader, "bert.feed_forward_length") == config["intermediate_size"]
    assert _kv(minilm_reader, "bert.context_length") == config["max_position_embeddings"]
    assert _kv(minilm_reader, "bert.attention.layer_norm_epsilon") == pytest.approx(1e-12)
    assert _kv(minilm_reader, "bert.attention.causal") is False
    assert _kv(minilm_reader, "bert.pooling_type") == int(gguf.PoolingType.MEAN)
    assert _kv(minilm_reader, "tokenizer.ggml.token_type_count") == config["type_vocab_size"]


def test_minilm_vocab_is_wordpiece_with_phantom_spaces(minilm_reader: Any) -> None:
    raw = (sources.minilm_dir() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    tokens = _kv(minilm_reader, "tokenizer.ggml.tokens")
    types = _kv(minilm_reader, "tokenizer.ggml.token_type")
    assert _kv(minilm_reader, "tokenizer.ggml.model") == "bert"
    assert len(tokens) == len(raw) == 30522
    assert (tokens[101], types[101]) == ("[CLS]", int(gguf.TokenType.CONTROL))
    assert (tokens[1996], types[1996]) == ("\u2581the", int(gguf.TokenType.NORMAL))
    continuation = raw.index("##s")
    assert tokens[continuation] == "s"
    special = {"bos": 101, "seperator": 102, "padding": 0, "unknown": 100, "mask": 103}
    for role, token_id in special.items():
        assert _kv(minilm_reader, f"tokenizer.ggml.{role}_token_id") == token_id


def test_minilm_tensors(minilm_reader: Any) -> None:
    tensors = {t.name: t for t in minilm_reader.tensors}
    assert len(tensors) == 5 + 16 * 6
    assert tensors["token_embd.weight"].shape.tolist() == [384, 30522]
    assert tensors["position_embd.weight"].shape.tolist() == [384, 512]
    assert tensors["blk.5.ffn_up.weight"].shape.tolist() == [384, 1536]
    assert tensors["blk.5.ffn_up.weight"].tensor_type.name == "F16"
    assert tensors["blk.5.layer_output_norm.bias"].tensor_type.name == "F32"
    assert tensors["token_types.weight"].tensor_type.name == "F32"
    assert not any(name.startswith("pooler") for name in tensors)


def test_bert_tensor_names() -> None:
    assert gguf_tensor_name("encoder.layer.3.attention.self.key.bias") == "blk.3.attn_k.bias"
    assert gguf_tensor_name("bert.encoder.layer.0.output.LayerNorm.weight") == (
        "blk.0.layer_output_norm.weight"
    )
    assert gguf_tensor_name("embeddings.LayerNorm.bias") == "token_embd_norm.bias"
    assert gguf_tensor_name("pooler.dense.weight") is None
    with pytest.raises(ValueError, match="unexpected"):
        gguf_tensor_name("encoder.layer.0.crossattention.self.key.weight")


def test_minilm_reference_data_is_complete() -> None:
    reference = json.loads((REPO_ROOT / "tests/data/minilm_reference.json").read_text("utf-8"))
    sentences = reference["sentences"]
    assert len(sentences) >= 5
    assert any(not s["text"].isascii() for s in sentences)
    assert {"torch", "sentence-transformers"} <= set(reference["versions"])
    for sentence in sentences:
        vector = sentence["embedding"]
        assert len(vector) == reference["dimensions"] == 384
        assert math.sqrt(sum(x * x for x in vector)) == pytest.approx(1.0, abs=1e-5)
        assert sentence["token_ids"][0] == 101 and sentence["token_ids"][-1] == 102


# --- the cache ---------------------------------------------------------------------------------


def test_second_ensure_is_a_cache_hit() -> None:
    first = ensure_model("tiny-spm")
    mtime = first.stat().st_mtime_ns
    started = time.monotonic()
    second = ensure_model("tiny-spm")
    assert time.monotonic() - started < 0.5
    assert second == first == model_path("tiny-spm")
    assert second.stat().st_mtime_ns == mtime


def test_cache_key_follows_every_parameter() -> None:
    keys = {name: model_path(name).name for name in MODEL_NAMES}
    assert len(set(keys.values())) == len(MODEL_NAMES)
    base = RECIPES["tiny-spm"].parameters()
    assert model_cache.cache_key(base) == model_cache.cache_key(dict(reversed(base.items())))
    assert model_cache.cache_key(base) != model_cache.cache_key({**base, "seed": 99})
    assert model_cache.cache_key(base) != model_cache.cache_key({**base, "generator": -1})


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "model.gguf"

    def broken_writer(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        model_cache.ensure_file(target, broken_writer)
    assert not target.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["model.gguf.lock"]
    def good_writer(tmp: Path) -> None:
        tmp.write_bytes(b"ok")

    assert model_cache.ensure_file(target, good_writer) == target
    assert target.read_bytes() == b"ok"


def test_generation_is_deterministic(tmp_path: Path) -> None:
    again = tmp_path / "again.gguf"
    write_random_llama(TINY_SPM, again)
    assert again.read_bytes() == ensure_model("tiny-spm").read_bytes()


def test_unknown_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown test model"):
        ensure_model("gpt-5")


def test_cli_prints_name_and_path() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "native.testmodels", "tiny-spm", "minilm"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=120,
    )
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert lines == [["tiny-spm", str(ensure_model("tiny-spm"))],
                     ["minilm", str(ensure_model("minilm"))]]
