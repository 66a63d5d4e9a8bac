"""Shared fixtures: generated models (cached outside the tree) loaded once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from native.testmodels import ensure_model


@pytest.fixture(scope="session")
def tiny_bpe_path() -> Path:
    return ensure_model("tiny-bpe")


@pytest.fixture(scope="session")
def tiny_spm_path() -> Path:
    return ensure_model("tiny-spm")


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    return ensure_model("minilm")
