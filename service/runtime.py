"""The loaded model and everything built around it: context, engine, chat templates, defaults.

`load_runtime` runs on a worker thread while the gRPC server already answers (health says
NOT_SERVING until it returns). Model loading logs its progress; LoRA adapters given at start-up
are loaded and applied, and one short warm-up run precedes serving (as llama-server does).

The warm-up runs on the engine thread, as every decode does. ggml's CPU backend computes through
OpenMP, and libgomp keeps a team of worker threads for each thread that ever ran a parallel
region, for as long as that thread lives. Once the process holds more OpenMP threads than CPUs,
libgomp cuts every team's spin at a barrier to ~100 iterations and the threads sleep instead: a
warm-up on this (pooled, long-lived) loader thread made `-t 2` decodes on two cores switch
context ~350 times a token and run ~15% slower (docs/benchmarks.md, "One OpenMP team").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from native import Context, ContextParams, LoraAdapter, Model, ModelParams
from native.errors import ModelLoadError
from service.chat_template import ChatTemplates, load_chat_templates
from service.config import ContextConfig, ModelConfig, ServerConfig
from service.engine.engine import Engine, EngineSettings
from service.engine.params import CompletionParams, SamplingParams
from service.request_params import Defaults
from service.speculative_runtime import load_speculator, spec_defaults

if TYPE_CHECKING:  # imported by _load_projector: native.mtmd loads numpy, which a server
    # without a projector never loads (it slows libllama's CPU kernels ~3%: see
    # test_the_server_process_never_loads_numpy)
    from native.mtmd import Projector

_log = logging.getLogger(__name__)


@dataclass
class LoadedLora:
    """A LoRA adapter loaded at start-up (--lora, --lora-scaled) and the scale it applies with."""

    id: int
    path: str
    adapter: LoraAdapter
    scale: float  # 0 with --lora-init-without-apply; the lora-adapters API may change it


@dataclass
class Runtime:
    config: ServerConfig
    model: Model
    ctx: Context
    engine: Engine
    templates: ChatTemplates
    defaults: CompletionParams
    created: int  # unix time the model finished loading (the `created` of /v1/models)
    loras: list[LoadedLora] = field(default_factory=list)  # in --lora order; ids are indexes
    projector: Projector | None = None  # --mmproj: images/audio in prompts (docs/multimodal.md)

    @property
    def model_name(self) -> str:
        return self.config.model.served_names[0]

    @property
    def n_slots(self) -> int:
        return len(self.engine.slots)

    @property
    def request_defaults(self) -> Defaults:
        return Defaults(self.defaults, self.n_slots, self.loras)

    def close(self) -> None:
        self.engine.stop()
        if self.engine.speculator is not None:
            self.engine.speculator.close()
        self.ctx.close()
        if self.projector is not None:  # before the model, whose vocabulary libmtmd keeps
            self.projector.close()
        for lora in self.loras:  # before the model, which frees its adapters itself
            lora.adapter.close()
        self.model.close()


def completion_defaults(config: ServerConfig) -> CompletionParams:
    """The server's request defaults: every SamplingParams field its flags set (same names),
    the rest llama-server's; n_predict is the server's -n, the n_predict of every request that
    sets none (or -1)."""
    s = config.sampling
    given = {f.name: getattr(s, f.name) for f in fields(SamplingParams) if hasattr(s, f.name)}
    given["logit_bias"] = tuple((b.token, b.bias) for b in s.logit_bias)
    return CompletionParams(n_predict=s.n_predict, n_keep=config.context.n_keep, stop=s.stop,
                            ignore_eos=s.ignore_eos,
                            cache_prompt=config.endpoints.cache_prompt,
                            n_cache_reuse=config.endpoints.cache_reuse,
                            sampling=SamplingParams(**given),
                            speculative=spec_defaults(config.speculative))


def _progress_logger(path: Path) -> Callable[[float], bool]:
    last = [-1]

    def report(progress: float) -> bool:
        pct = int(progress * 100)
        if pct // 10 != last[0] // 10 or pct == 100:
            last[0] = pct
            _log.info("loading model %s: %d%%", path.name, pct)
        return True

    return report


def model_params(m: ModelConfig) -> ModelParams:
    return ModelParams(
        # "auto" and "all" both mean every layer that fits; llama.cpp spells that -1.
        n_gpu_layers=m.n_gpu_layers if m.n_gpu_layers >= 0 else -1,
        main_gpu=m.main_gpu, split_mode=m.split_mode, tensor_split=m.tensor_split,
        load_mode=m.load_mode, lazy_mode=m.lazy_mode, check_tensors=m.check_tensors,
        use_extra_bufts=m.repack, no_host=m.no_host,
    )


def context_params(c: ContextConfig, n_ctx_train: int) -> ContextParams:
    return ContextParams(
        n_ctx=c.n_ctx or n_ctx_train, n_batch=c.n_batch, n_ubatch=c.n_ubatch,
        n_seq_max=c.n_parallel, n_threads=c.n_threads, n_threads_batch=c.n_threads_batch,
        embeddings=c.embeddings, pooling=c.pooling, flash_attn=c.flash_attn,
        type_k=c.cache_type_k, type_v=c.cache_type_v, offload_kqv=c.kv_offload,
        op_offload=c.op_offload, kv_unified=c.kv_unified, swa_full=c.swa_full,
        no_perf=not c.perf, rope_scaling=c.rope_scaling, rope_freq_base=c.rope_freq_base,
        rope_freq_scale=c.rope_freq_scale, yarn_orig_ctx=c.yarn_orig_ctx,
        yarn_ext_factor=c.yarn_ext_factor, yarn_attn_factor=c.yarn_attn_factor,
        yarn_beta_fast=c.yarn_beta_fast, yarn_beta_slow=c.yarn_beta_slow,
    )


def apply_lora(ctx: Context, loras: Sequence[LoadedLora]) -> None:
    """Make the context use every adapter at its current scale (those at 0 are left out, as in
    llama-server). Call it on the engine thread once the engine runs (Engine.call)."""
    ctx.set_lora_adapters([(lora.adapter, lora.scale) for lora in loras if lora.scale != 0.0])


def _load_loras(model: Model, m: ModelConfig, cleanup: ExitStack) -> list[LoadedLora]:
    loras = []
    for i, spec in enumerate(m.lora_adapters):
        adapter = LoraAdapter(model, spec.path)
        cleanup.callback(adapter.close)  # before the model's: llama.cpp frees a model's adapters
        scale = 0.0 if m.lora_init_without_apply else spec.scale
        loras.append(LoadedLora(i, spec.path, adapter, scale))
        _log.info("LoRA adapter %d: %s, scale %g", i, spec.path, scale)
    return loras


def _templates(config: ServerConfig, model: Model) -> ChatTemplates:
    vocab = model.vocab
    return load_chat_templates(
        override=config.chat.chat_template,
        model_template=model.chat_template(),
        model_tool_use_template=model.chat_template("tool_use"),
        bos_token=vocab.token_to_piece(vocab.bos).decode("utf-8", "replace")
        if vocab.bos >= 0 else "",
        eos_token=vocab.token_to_piece(vocab.eos).decode("utf-8", "replace")
        if vocab.eos >= 0 else "",
        add_bos=vocab.add_bos, add_eos=vocab.add_eos,
    )


def _load_projector(config: ServerConfig, model: Model) -> Projector | None:
    """--mmproj, loaded for the model (libmtmd refuses one made for another model's width)."""
    if not config.model.mmproj:
        return None
    from native.mtmd import Projector, ProjectorParams

    proj = Projector(model, config.model.mmproj, ProjectorParams(
        use_gpu=config.model.mmproj_offload, n_threads=max(config.context.n_threads, 1),
        warmup=config.context.warmup))
    if proj.uses_mrope:  # its media take fewer positions than embeddings: not carried yet
        proj.close()
        raise ModelLoadError(f"projector {config.model.mmproj}: projectors of M-RoPE models "
                             "(Qwen2-VL and its kind) are not supported yet")
    _log.info("multimodal projector %s: vision %s, audio %s", config.model.mmproj,
              proj.supports_vision, proj.supports_audio)
    return proj


def load_runtime(config: ServerConfig) -> Runtime:
    """Load the model, its LoRA adapters and the context, warm up, start the engine.

    Raises native's errors (ModelLoadError, ContextError, InvalidInputError) with nothing left
    allocated.
    """
    path = Path(config.model.path)
    started = time.monotonic()
    with ExitStack() as cleanup:
        model = Model(path, model_params(config.model), progress=_progress_logger(path))
        cleanup.callback(model.close)
        ctx = Context(model, context_params(config.context, model.n_ctx_train))
        cleanup.callback(ctx.close)
        loras = _load_loras(model, config.model, cleanup)
        apply_lora(ctx, loras)
        projector = _load_projector(config, model)
        if projector is not None:
            cleanup.callback(projector.close)
        templates = _templates(config, model)
        speculator = load_speculator(config.speculative, model, ctx, model_params(config.model))
        if speculator is not None:
            cleanup.callback(speculator.close)
        engine = Engine(model, ctx, EngineSettings(
            context_shift=config.context.context_shift,
            slot_prompt_similarity=config.endpoints.slot_prompt_similarity,
            special=config.endpoints.special,
            sampling_threads=config.context.n_threads_sampling,
            max_queue=config.endpoints.max_queue,
            multimodal=projector is not None,
        ), [lora.adapter for lora in loras], speculator)
        engine.start()
        cleanup.callback(engine.stop)  # before the context closes (an ExitStack runs LIFO)
        if config.context.warmup:
            _log.info("warming up the model with a short run (--no-warmup to skip)")
            engine.call(ctx.warmup).result()  # see the module's docstring
        cleanup.pop_all()
    if config.endpoints.cache_reuse and not ctx.can_shift:  # as llama-server warns
        _log.warning("--cache-reuse has no effect: this context cannot shift its KV cells")
    _log.info("model loaded in %.1fs: %s, %d slots of %d tokens", time.monotonic() - started,
              model.description(), len(engine.slots), ctx.n_ctx_seq)
    return Runtime(config, model, ctx, engine, templates, completion_defaults(config),
                   int(time.time()), loras, projector)
