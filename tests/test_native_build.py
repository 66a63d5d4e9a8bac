"""The pinned build's bookkeeping: clear errors, keys that change with what changes the build."""

from __future__ import annotations

from pathlib import Path

import pytest

from native import build, paths


def test_explicit_lib_dir_without_library_is_a_clear_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMA_GRPC_LIB_DIR", str(tmp_path))
    with pytest.raises(build.BuildError, match=r"has no libllama\.so"):
        build.ensure_build()


def test_build_key_depends_on_flags_and_targets() -> None:
    base = build.build_key((), ())
    assert base == build.build_key((), ())
    assert base != build.build_key(("-DGGML_CUDA=ON",), ())
    assert base != build.build_key((), ("llama-server",))


def test_cached_build_is_reused_and_complete() -> None:
    lib = build.ensure_build()
    assert lib.library.exists()
    assert (lib.include_dir / "llama.h").exists()
    assert (lib.lib_dir.parent.parent / ".complete").exists()


def test_sdist_is_verified_by_sha256() -> None:
    tarball = build.ensure_sdist()
    assert build._sha256(tarball) == paths.LLAMA_CPP_PYTHON_SHA256


def test_failed_step_reports_log_and_fix(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    with pytest.raises(build.BuildError) as info:
        build._run_logged(["sh", "-c", "echo compiler exploded; exit 3"], log, "CMake build")
    message = str(info.value)
    assert "CMake build failed (exit 3)" in message
    assert "compiler exploded" in message
    assert "python -m native.build" in message
