"""Load-time flags reach llama.cpp: `load_runtime(load_config([...]))` on tiny-bpe, and each flag's
effect wherever a CPU build can observe it (logits, generated text, memory, llama.cpp's log).

The LoRA adapter is generated here with the `gguf` package in the layout llama.cpp's
src/llama-adapter.cpp reads (general.type=adapter, adapter.type=lora, adapter.lora.alpha, tensors
`<weight>.lora_a` of ggml shape [n_in, r] and `<weight>.lora_b` of [r, n_out]), with random
weights large enough to move the logits by order 1.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import gguf
import numpy as np
import numpy.typing as npt
import pytest

import native
from native._ffi import lib
from service.config import load_config
from service.engine.events import Event, Failed, Finished
from service.engine.task import Task
from service.runtime import Runtime, apply_lora, load_runtime

SMALL = ["-c", "256", "-np", "1", "-t", "2"]
START_HEADER = 128006  # <|start_header_id|>: a control token of the llama-3 vocabulary
TOL = 1e-4  # same model, same batch shape: only kernel noise


@contextmanager
def _runtime(model: Path, *flags: str) -> Iterator[Runtime]:
    rt = load_runtime(load_config(["-m", str(model), *SMALL, *flags], {}))
    try:
        yield rt
    finally:
        rt.close()


def _last_logits(rt: Runtime, text: str = "Hello world, this is") -> npt.NDArray[np.float32]:
    def run() -> npt.NDArray[np.float32]:
        batch = native.Batch(64)
        batch.add_sequence(rt.model.vocab.tokenize(text), 0, 0, output_last=True)
        rt.ctx.decode(batch)
        logits = np.array(rt.ctx.logits_ith(batch.n_tokens - 1))
        rt.ctx.seq_rm(0)
        return logits

    return rt.engine.call(run).result(timeout=60)  # the engine thread owns the context


def _generate(rt: Runtime, prompt: str, n_predict: int) -> Finished:
    events: list[Event] = []
    done = threading.Event()

    def sink(batch: list[Event]) -> None:
        events.extend(batch)
        if any(isinstance(e, Finished | Failed) for e in batch):
            done.set()

    params = dataclasses.replace(rt.defaults, n_predict=n_predict)
    rt.engine.submit(Task("t", rt.model.vocab.tokenize(prompt), params, sink))
    assert done.wait(60), "generation did not finish"
    assert isinstance(events[-1], Finished), events[-1]
    return events[-1]


def write_lora(path: Path, model: Path, rank: int = 4, transpose: bool = False) -> Path:
    """A LoRA adapter GGUF for a llama-architecture `model`, on attn_q and ffn_down of each block.

    `transpose` writes lora_a with the wrong orientation, which llama.cpp must reject.
    """
    with native.Model(model) as m:
        n_embd, n_layer = m.n_embd, m.n_layer
        n_ff = int(m.meta_value("llama.feed_forward_length") or 0)
    # ggml shapes [n_in, n_out] of the adapted weights; numpy's order is the reverse.
    shapes = {"attn_q": (n_embd, n_embd), "ffn_down": (n_ff, n_embd)}
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(rank))
    rng = np.random.default_rng(7)
    for layer in range(n_layer):
        for weight, (n_in, n_out) in shapes.items():
            name = f"blk.{layer}.{weight}.weight"
            a = rng.normal(0.0, 0.5, (n_in, rank) if transpose else (rank, n_in))
            b = rng.normal(0.0, 0.5, (n_out, rank))
            writer.add_tensor(f"{name}.lora_a", a.astype(np.float32))
            writer.add_tensor(f"{name}.lora_b", b.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def lora_path(tiny_bpe_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_lora(tmp_path_factory.mktemp("lora") / "tiny-bpe-lora.gguf", tiny_bpe_path)


@pytest.fixture(scope="module")
def base_logits(tiny_bpe_path: Path) -> npt.NDArray[np.float32]:
    with _runtime(tiny_bpe_path) as rt:
        return _last_logits(rt)


# -- LoRA -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_lora_is_applied_at_its_scale(tiny_bpe_path: Path, lora_path: Path,
                                      base_logits: npt.NDArray[np.float32]) -> None:
    with _runtime(tiny_bpe_path, "--lora", str(lora_path)) as rt:
        assert [(lora.id, lora.path, lora.scale) for lora in rt.loras] == [(0, str(lora_path), 1.0)]
        full = _last_logits(rt)
    with _runtime(tiny_bpe_path, "--lora-scaled", f"{lora_path}:0.5") as rt:
        assert rt.loras[0].scale == 0.5
        half = _last_logits(rt)
    assert np.abs(full - base_logits).max() > 0.1
    assert np.abs(half - base_logits).max() > 0.05
    assert np.abs(full - half).max() > 0.05


@pytest.mark.slow
def test_lora_init_without_apply_loads_at_scale_0(tiny_bpe_path: Path, lora_path: Path,
                                                  base_logits: npt.NDArray[np.float32]) -> None:
    flags = ("--lora", str(lora_path), "--lora-init-without-apply")
    with _runtime(tiny_bpe_path, *flags) as rt:
        assert rt.loras[0].scale == 0.0
        assert np.abs(_last_logits(rt) - base_logits).max() <= TOL
        rt.loras[0].scale = 1.0  # what the lora-adapters API will do
        rt.engine.call(lambda: apply_lora(rt.ctx, rt.loras)).result(timeout=60)
        applied = _last_logits(rt)
    with _runtime(tiny_bpe_path, "--lora", str(lora_path)) as rt:
        assert np.abs(_last_logits(rt) - applied).max() <= TOL


def test_missing_lora_is_a_clear_error(tiny_bpe_path: Path, tmp_path: Path) -> None:
    config = load_config(["-m", str(tiny_bpe_path), *SMALL, "--lora", str(tmp_path / "no.gguf")])
    with pytest.raises(native.ModelLoadError, match=r"LoRA adapter not found: .*no\.gguf"):
        load_runtime(config)


@pytest.mark.slow
def test_lora_for_another_shape_is_refused_by_llama_cpp(tiny_bpe_path: Path,
                                                        tmp_path: Path) -> None:
    bad = write_lora(tmp_path / "transposed.gguf", tiny_bpe_path, transpose=True)
    config = load_config(["-m", str(tiny_bpe_path), *SMALL, "--lora", str(bad)])
    with pytest.raises(native.ModelLoadError, match="could not load the LoRA adapter"):
        load_runtime(config)


# -- generation -------------------------------------------------------------------------------
@pytest.mark.parametrize("special", [False, True])
def test_special_renders_control_tokens(tiny_bpe_path: Path, special: bool) -> None:
    flags = ["-l", f"{START_HEADER}+100", "--temp", "0"] + (["--special"] if special else [])
    with _runtime(tiny_bpe_path, *flags) as rt:
        assert rt.model.vocab.is_control(START_HEADER)
        finished = _generate(rt, "Hello", n_predict=3)
    assert finished.tokens == (START_HEADER,) * 3
    assert finished.content == ("<|start_header_id|>" * 3 if special else "")


# -- warm-up ----------------------------------------------------------------------------------
@pytest.mark.parametrize("warmup", [True, False])
def test_warmup_runs_unless_disabled_and_leaves_the_memory_empty(
    tiny_bpe_path: Path, warmup: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="service.runtime"), \
            _runtime(tiny_bpe_path, *([] if warmup else ["--no-warmup"])) as rt:
        assert rt.ctx.seq_pos_max(0) == -1
        perf = rt.ctx.perf()
        assert (perf["t_p_eval_ms"], perf["t_eval_ms"]) == (0.0, 0.0)
    warmed = any("warming up" in r.getMessage() for r in caplog.records)
    assert warmed is warmup


def test_context_warmup_decodes_then_forgets(tiny_bpe_path: Path) -> None:
    with native.Model(tiny_bpe_path) as model, \
            native.Context(model, native.ContextParams(n_ctx=64, n_threads=2)) as ctx:
        batch = native.Batch(8)
        last = batch.add_sequence(model.vocab.tokenize("Hello world"), 0, 0, output_last=True)
        ctx.decode(batch)
        ctx.logits_ith(last)  # waits for the computation, which books its time
        assert ctx.seq_pos_max(0) >= 1 and ctx.perf()["t_p_eval_ms"] > 0
        ctx.warmup()
        assert ctx.seq_pos_max(0) == -1
        assert (ctx.perf()["t_p_eval_ms"], ctx.perf()["t_eval_ms"]) == (0.0, 0.0)


# -- placement and loading --------------------------------------------------------------------
def test_placement_flags_reach_the_parameters(tiny_bpe_path: Path,
                                              base_logits: npt.NDArray[np.float32]) -> None:
    flags = ["-sm", "none", "-mg", "0", "-ts", "3,1", "-lzm", "off", "--no-repack", "--no-host",
             "--no-op-offload", "-lm", "none"]
    with _runtime(tiny_bpe_path, *flags) as rt:
        p = rt.model.params
        assert (p.split_mode, p.main_gpu, p.tensor_split) == ("none", 0, (3.0, 1.0))
        assert (p.lazy_mode, p.use_extra_bufts, p.no_host, p.load_mode) == (
            "off", False, True, "none")
        assert rt.ctx.params.op_offload is False
        # On one CPU none of this changes the numbers.
        assert np.abs(_last_logits(rt) - base_logits).max() <= TOL


@pytest.mark.parametrize("repack", [True, False])
def test_repack_decides_whether_llama_cpp_tries_repacked_buffers(
    tiny_bpe_path: Path, repack: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="llama.cpp"), \
            native.Model(tiny_bpe_path, native.ModelParams(use_extra_bufts=repack)):
        pass
    assert any("CPU_REPACK" in r.getMessage() for r in caplog.records) is repack


def test_split_mode_reaches_llama_cpp(tiny_bpe_path: Path,
                                      caplog: pytest.LogCaptureFixture) -> None:
    if lib.llama_supports_gpu_offload():
        pytest.skip("observable on a CPU-only build, where tensor split mode has no device")
    config = load_config(["-m", str(tiny_bpe_path), *SMALL, "-sm", "tensor"])
    with caplog.at_level(logging.INFO, logger="llama.cpp"), pytest.raises(native.ModelLoadError):
        load_runtime(config)
    assert any("SPLIT_MODE_TENSOR needs >= 1 devices" in r.getMessage() for r in caplog.records)


def test_bad_placement_is_a_clear_error(tiny_bpe_path: Path) -> None:
    n_max = int(lib.llama_max_devices())
    too_many = ",".join(["1"] * (n_max + 1))
    config = load_config(["-m", str(tiny_bpe_path), *SMALL, "-ts", too_many])
    with pytest.raises(native.InvalidInputError,
                       match=f"tensor split has {n_max + 1} entries; this build supports {n_max}"):
        load_runtime(config)
    with pytest.raises(native.InvalidInputError, match="shares must be finite and >= 0"):
        native.Model(tiny_bpe_path, native.ModelParams(tensor_split=(1.0, float("nan"))))
