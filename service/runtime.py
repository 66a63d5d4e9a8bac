"""The loaded model and everything built around it: context, engine, chat templates, defaults.

`load_runtime` runs on a worker thread while the gRPC server already answers (health says
NOT_SERVING until it returns). Model loading logs its progress.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from native import Context, ContextParams, Model, ModelParams
from service.chat_template import ChatTemplates, load_chat_templates
from service.config import ServerConfig
from service.engine.engine import Engine, EngineSettings
from service.engine.params import CompletionParams, SamplingParams

_log = logging.getLogger(__name__)


@dataclass
class Runtime:
    config: ServerConfig
    model: Model
    ctx: Context
    engine: Engine
    templates: ChatTemplates
    defaults: CompletionParams
    created: int  # unix time the model finished loading (the `created` of /v1/models)

    @property
    def model_name(self) -> str:
        return self.config.model.served_names[0]

    @property
    def n_slots(self) -> int:
        return len(self.engine.slots)

    def close(self) -> None:
        self.engine.stop()
        self.ctx.close()
        self.model.close()


def completion_defaults(config: ServerConfig) -> CompletionParams:
    s = config.sampling
    sampling = SamplingParams(
        temperature=s.temperature, dynatemp_range=s.dynatemp_range,
        dynatemp_exponent=s.dynatemp_exponent, top_k=s.top_k, top_p=s.top_p, min_p=s.min_p,
        typical_p=s.typical_p, top_n_sigma=s.top_n_sigma, repeat_penalty=s.repeat_penalty,
        repeat_last_n=s.repeat_last_n, presence_penalty=s.presence_penalty,
        frequency_penalty=s.frequency_penalty, dry_multiplier=s.dry_multiplier,
        dry_base=s.dry_base, dry_allowed_length=s.dry_allowed_length,
        dry_penalty_last_n=s.dry_penalty_last_n, dry_sequence_breakers=s.dry_sequence_breakers,
        xtc_probability=s.xtc_probability, xtc_threshold=s.xtc_threshold, mirostat=s.mirostat,
        mirostat_tau=s.mirostat_tau, mirostat_eta=s.mirostat_eta, seed=s.seed,
        logit_bias=tuple((b.token, b.bias) for b in s.logit_bias),
        samplers=tuple(n for n in s.samplers if n != "penalties") if _penalties_first(s.samplers)
        else s.samplers,
        grammar=s.grammar,
    )
    return CompletionParams(n_keep=config.context.n_keep, stop=s.stop, ignore_eos=s.ignore_eos,
                            cache_prompt=config.endpoints.cache_prompt, sampling=sampling)


def _penalties_first(samplers: tuple[str, ...]) -> bool:
    # The engine applies penalties before the listed samplers unless the list names them
    # elsewhere; a list that starts with them means the same thing.
    return bool(samplers) and samplers[0] == "penalties"


def _progress_logger(path: Path) -> Callable[[float], bool]:
    last = [-1]

    def report(progress: float) -> bool:
        pct = int(progress * 100)
        if pct // 10 != last[0] // 10 or pct == 100:
            last[0] = pct
            _log.info("loading model %s: %d%%", path.name, pct)
        return True

    return report


def load_runtime(config: ServerConfig) -> Runtime:
    m, c = config.model, config.context
    path = Path(m.path)
    started = time.monotonic()
    model = Model(path, ModelParams(
        # "auto" and "all" both mean every layer that fits; llama.cpp spells that -1.
        n_gpu_layers=m.n_gpu_layers if m.n_gpu_layers >= 0 else -1,
        main_gpu=m.main_gpu,
        use_mmap=m.load_mode in ("auto", "mmap", "mmap+mlock"),
        use_mlock=m.load_mode in ("mlock", "mmap+mlock"),
        check_tensors=m.check_tensors,
    ), progress=_progress_logger(path))
    n_ctx = c.n_ctx or model.n_ctx_train
    ctx = Context(model, ContextParams(
        n_ctx=n_ctx, n_batch=c.n_batch, n_ubatch=c.n_ubatch, n_seq_max=c.n_parallel,
        n_threads=c.n_threads, n_threads_batch=c.n_threads_batch, embeddings=c.embeddings,
        pooling=c.pooling, flash_attn=c.flash_attn, type_k=c.cache_type_k,
        type_v=c.cache_type_v, offload_kqv=c.kv_offload, kv_unified=c.kv_unified,
        swa_full=c.swa_full, no_perf=not c.perf, rope_scaling=c.rope_scaling,
        rope_freq_base=c.rope_freq_base, rope_freq_scale=c.rope_freq_scale,
        yarn_orig_ctx=c.yarn_orig_ctx, yarn_ext_factor=c.yarn_ext_factor,
        yarn_attn_factor=c.yarn_attn_factor, yarn_beta_fast=c.yarn_beta_fast,
        yarn_beta_slow=c.yarn_beta_slow,
    ))
    vocab = model.vocab
    templates = load_chat_templates(
        override=config.chat.chat_template,
        model_template=model.chat_template(),
        model_tool_use_template=model.chat_template("tool_use"),
        bos_token=vocab.token_to_piece(vocab.bos).decode("utf-8", "replace")
        if vocab.bos >= 0 else "",
        eos_token=vocab.token_to_piece(vocab.eos).decode("utf-8", "replace")
        if vocab.eos >= 0 else "",
        add_bos=vocab.add_bos, add_eos=vocab.add_eos,
    )
    engine = Engine(model, ctx, EngineSettings(
        context_shift=c.context_shift,
        slot_prompt_similarity=config.endpoints.slot_prompt_similarity,
        n_predict_default=config.sampling.n_predict,
    ))
    engine.start()
    _log.info("model loaded in %.1fs: %s, %d slots of %d tokens", time.monotonic() - started,
              model.description(), len(engine.slots), ctx.n_ctx_seq)
    return Runtime(config, model, ctx, engine, templates, completion_defaults(config),
                   int(time.time()))
