"""Convert a Hugging Face BertModel (safetensors + config + WordPiece tokenizer) into a GGUF of
llama.cpp's `bert` architecture, as an embedding model with the model's own pooling.

Linear weights are stored as F16 (the precision llama.cpp's own converter defaults to); norms,
biases and the two-row token-type table stay F32. The pooler head is dropped: sentence embeddings
come from pooling the last hidden states, as sentence-transformers does.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import gguf
import numpy as np
from safetensors.numpy import load_file

from native.testmodels.wordpiece_vocab import WordPieceVocab, load_wordpiece_vocab

_GLOBAL_NAMES = {
    "embeddings.word_embeddings.weight": "token_embd.weight",
    "embeddings.position_embeddings.weight": "position_embd.weight",
    "embeddings.token_type_embeddings.weight": "token_types.weight",
    "embeddings.LayerNorm.weight": "token_embd_norm.weight",
    "embeddings.LayerNorm.bias": "token_embd_norm.bias",
}
_LAYER_PARTS = {
    "attention.self.query": "attn_q",
    "attention.self.key": "attn_k",
    "attention.self.value": "attn_v",
    "attention.output.dense": "attn_output",
    "attention.output.LayerNorm": "attn_output_norm",
    "intermediate.dense": "ffn_up",
    "output.dense": "ffn_down",
    "output.LayerNorm": "layer_output_norm",
}
_LAYER_RE = re.compile(r"^encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$")
_DROPPED = re.compile(r"^(pooler\.|embeddings\.position_ids$)")
# Kept F32: llama.cpp adds the token-type row straight onto F32 activations.
_KEEP_F32 = {"token_types.weight"}
_POOLING = {
    "pooling_mode_mean_tokens": gguf.PoolingType.MEAN,
    "pooling_mode_cls_token": gguf.PoolingType.CLS,
}


def gguf_tensor_name(hf_name: str) -> str | None:
    """llama.cpp's name for a Hugging Face BertModel tensor; None for tensors we drop."""
    hf_name = hf_name.removeprefix("bert.")
    if _DROPPED.match(hf_name):
        return None
    if hf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[hf_name]
    match = _LAYER_RE.match(hf_name)
    if match is None or match.group(2) not in _LAYER_PARTS:
        raise ValueError(f"unexpected BERT tensor {hf_name!r}")
    layer, part, kind = match.groups()
    return f"blk.{layer}.{_LAYER_PARTS[part]}.{kind}"


def _pooling_type(model_dir: Path) -> gguf.PoolingType:
    config_path = model_dir / "1_Pooling" / "config.json"
    if not config_path.is_file():
        return gguf.PoolingType.MEAN
    config = json.loads(config_path.read_text(encoding="utf-8"))
    chosen = [pooling for flag, pooling in _POOLING.items() if config.get(flag)]
    if len(chosen) != 1:
        raise ValueError(f"{config_path}: expected exactly one of {sorted(_POOLING)} to be true")
    return chosen[0]


def _add_hyperparameters(writer: Any, config: dict[str, Any], pooling: gguf.PoolingType) -> None:
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_layer_norm_eps(config["layer_norm_eps"])
    writer.add_causal_attention(False)
    writer.add_pooling_type(pooling)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)


def _add_vocab(writer: Any, vocab: WordPieceVocab, type_vocab_size: int) -> None:
    writer.add_tokenizer_model("bert")
    # llama.cpp ignores the pre-tokenizer name for WPM vocabularies; "default" claims nothing.
    writer.add_tokenizer_pre("default")
    writer.add_token_list(list(vocab.tokens))
    writer.add_token_types(list(vocab.token_types))
    writer.add_token_type_count(type_vocab_size)
    # llama.cpp has no separate CLS id: [CLS] is the BOS token it prepends to every input.
    setters = {
        "cls": writer.add_bos_token_id,
        "unk": writer.add_unk_token_id,
        "sep": writer.add_sep_token_id,
        "pad": writer.add_pad_token_id,
        "mask": writer.add_mask_token_id,
    }
    for role, token_id in vocab.special_ids.items():
        setters[role](token_id)


def _stored(gguf_name: str, values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float32, copy=False)
    if values.ndim >= 2 and gguf_name not in _KEEP_F32:
        return values.astype(np.float16)
    return values


def convert_bert(model_dir: Path, out_path: Path, general_name: str,
                 head: dict[str, np.ndarray] | None = None,
                 pooling: gguf.PoolingType | None = None) -> None:
    """Write the GGUF for the BertModel in `model_dir` to `out_path` (overwriting it); `head`
    adds tensors by their GGUF names (a classifier head) and `pooling` overrides the model's."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != "bert" or config.get("hidden_act") != "gelu":
        raise ValueError(f"{model_dir}: not a plain GELU BERT model")
    vocab = load_wordpiece_vocab(model_dir)
    if len(vocab.tokens) != config["vocab_size"]:
        raise ValueError(f"vocab.txt has {len(vocab.tokens)} tokens, config.json says otherwise")
    writer = gguf.GGUFWriter(str(out_path), arch="bert")
    writer.add_name(general_name)
    _add_hyperparameters(writer, config, pooling or _pooling_type(model_dir))
    _add_vocab(writer, vocab, config.get("type_vocab_size", 2))
    weights = load_file(model_dir / "model.safetensors")
    for hf_name, values in sorted(weights.items()):
        name = gguf_tensor_name(hf_name)
        if name is not None:
            writer.add_tensor(name, _stored(name, values))
    for name, values in sorted((head or {}).items()):
        writer.add_tensor(name, _stored(name, values))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
