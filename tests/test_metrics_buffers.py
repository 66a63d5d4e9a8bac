"""The buffer sizes llama.cpp logs (native.buffers): the line parser on the pinned version's line
shapes, host vs device by buffer type, the capture of one thread's lines, and the sizes a real
model and context report, against what llama.h says of the same memory."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest

from native import Context, ContextParams, Model
from native._ffi import captured_log, lib
from native.buffers import BufferSize, parse_buffer_line, parse_buffer_sizes
from service.metrics import kv_cache_bytes

MIB = 1024 * 1024


@pytest.mark.parametrize(("line", "want"), [
    ("load_tensors:   CPU_Mapped model buffer size =     8.46 MiB",
     BufferSize("model_weights", "CPU_Mapped", round(8.46 * MIB))),
    ("load_tensors:        CUDA0 model buffer size =  1234.50 MiB",
     BufferSize("model_weights", "CUDA0", round(1234.5 * MIB))),
    ("llama_context:        CPU  output buffer size =     0.98 MiB",
     BufferSize("output", "CPU", round(0.98 * MIB))),
    ("llama_context:  CUDA_Host  output buffer size =     0.49 MiB",
     BufferSize("output", "CUDA_Host", round(0.49 * MIB))),
    ("llama_kv_cache:      CUDA0 KV buffer size =    64.00 MiB",
     BufferSize("kv_cache", "CUDA0", 64 * MIB)),
    ("llama_memory_recurrent:        CPU RS buffer size =     1.50 MiB",
     BufferSize("kv_cache", "CPU", round(1.5 * MIB))),
    ("sched_reserve:        CPU compute buffer size =   250.75 MiB",
     BufferSize("compute", "CPU", round(250.75 * MIB))),
    ("sched_reserve:  CUDA_Host compute buffer size =    12.01 MiB",
     BufferSize("compute", "CUDA_Host", round(12.01 * MIB))),
    ("sched_reserve:      Metal compute buffer size =     0.00 MiB",
     BufferSize("compute", "Metal", 0)),
])
def test_buffer_lines_parse(line: str, want: BufferSize) -> None:
    assert parse_buffer_line(line) == want
    assert parse_buffer_line(line + "\n") == want


@pytest.mark.parametrize("line", [
    "llama_context: n_ctx         = 1024",
    "load_tensors: offloaded 33/33 layers to GPU",
    "sched_reserve:        CPU compute buffer size is   0.5000 MiB, matches expectation of "
    "0.5000 MiB",
    "llama_adapter_lora_init_impl:        CPU LoRA buffer size =     1.00 MiB",
    "llama_kv_cache:        CPU KV buffer size =      nan MiB",
    "",
])
def test_other_lines_are_not_buffers(line: str) -> None:
    assert parse_buffer_line(line) is None


def test_host_or_device_by_buffer_type() -> None:
    host = ("CPU", "CPU_Mapped", "CPU_REPACK", "CUDA_Host", "ROCm_Host")
    device = ("CUDA0", "CUDA1", "Metal", "Vulkan0", "ROCm0", "SYCL0")
    assert all(BufferSize("compute", t, 1).memory == "host" for t in host)
    assert all(BufferSize("compute", t, 1).memory == "device" for t in device)


def test_parse_keeps_every_buffer_in_order() -> None:
    lines = ["llama_kv_cache:        CPU KV buffer size =     1.00 MiB",
             "llama_kv_cache: graph splits = 1",
             "llama_kv_cache:        CPU KV buffer size =     2.00 MiB"]
    assert [b.bytes for b in parse_buffer_sizes(lines)] == [MIB, 2 * MIB]


@pytest.mark.slow
def test_capture_is_per_thread_and_leaves_the_log_alone(
        tiny_bpe_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    seen_elsewhere: list[str] = []

    def other_thread() -> None:
        with captured_log() as lines:
            barrier.wait()
            barrier.wait()
        seen_elsewhere.extend(lines)

    barrier = threading.Barrier(2)
    worker = threading.Thread(target=other_thread)
    worker.start()
    barrier.wait()
    with (caplog.at_level(logging.INFO, logger="llama.cpp"), captured_log() as outer,
          captured_log() as inner):
        model = Model(tiny_bpe_path)
    barrier.wait()
    worker.join()
    try:
        logged = [r.getMessage() for r in caplog.records if r.name == "llama.cpp"]
        buffer_lines = [line for line in inner if parse_buffer_line(line)]
        assert buffer_lines and all(line in logged for line in buffer_lines)
        assert outer == inner  # a capture inside another feeds both
        assert not [line for line in seen_elsewhere if "model buffer" in line]
    finally:
        model.close()


@pytest.mark.slow
def test_a_real_model_and_context_report_their_buffers(tiny_bpe_path: Path) -> None:
    with Model(tiny_bpe_path) as model, Context(model, ContextParams(n_ctx=1024, n_seq_max=2,
                                                                     n_threads=1)) as ctx:
        weights = sum(b.bytes for b in model.buffers if b.part == "model_weights")
        # The mapped buffer spans the tensor data (padding included): llama_model_size and a
        # little more, within the log's rounding.
        assert model.size - MIB // 100 <= weights <= model.size + MIB
        parts = {b.part for b in ctx.buffers}
        assert parts == {"kv_cache", "output", "compute"}
        kv = sum(b.bytes for b in ctx.buffers if b.part == "kv_cache")
        computed = kv_cache_bytes(ctx.n_ctx, model.n_layer, model.n_embd, model.n_head,
                                  model.n_head_kv, "f16", "f16")
        assert abs(kv - computed) <= MIB // 200
        assert sum(b.bytes for b in ctx.buffers if b.part == "compute") > 0
        if not bool(lib.llama_supports_gpu_offload()):
            assert all(b.on_host for b in (*model.buffers, *ctx.buffers))
