"""Speculative decoding's settings (issue 20): what `-md`, `--spec-type`, the draft and n-gram
flags resolve to (service/cli_flags/table_speculative.py)."""

from __future__ import annotations

from dataclasses import dataclass

from service.config_derive import Settings
from service.engine.speculative import DRAFT_SIMPLE, NGRAM_SIMPLE


@dataclass(frozen=True)
class SpeculativeConfig:
    model_draft: str | None = None  # -md: the draft model's path (draft-simple)
    ngram: bool = False  # --spec-type ngram-simple
    n_max: int = 3
    n_min: int = 0
    p_min: float = 0.0
    n_gpu_layers_draft: int = -1  # -ngld (cli_flags.values.GPU_LAYERS_*)
    ctx_size_draft: int = 0  # -cd; 0: the target's context size
    ngram_size_n: int = 12
    ngram_size_m: int = 48
    spec_types: tuple[str, ...] = ()  # --spec-type's kinds, in the order given

    @property
    def enabled(self) -> bool:
        return self.model_draft is not None or self.ngram

    @property
    def types(self) -> str:
        """generation_settings' speculative.types as llama-server writes them: its default
        kind "none", then --spec-type's in the order given; `-md` alone drafts too here (the
        spec's llama-server did), so draft-simple joins them then."""
        kinds = ["none", *self.spec_types]
        if self.model_draft is not None and DRAFT_SIMPLE not in kinds:
            kinds.append(DRAFT_SIMPLE)
        return ",".join(kinds)


def speculative_config(s: Settings) -> SpeculativeConfig:
    """The settings; `--spec-type draft-simple` without `-md` is a usage error."""
    types = s.str_("spec_type").split(",")
    draft = s.opt_str("model_draft") or None
    if DRAFT_SIMPLE in types and draft is None:
        from service.cli_flags import ConfigError

        raise ConfigError("--spec-type draft-simple needs a draft model: pass -md FNAME")
    return SpeculativeConfig(
        model_draft=draft, ngram=NGRAM_SIMPLE in types, n_max=s.int_("draft_n_max"),
        n_min=s.int_("draft_n_min"), p_min=s.float_("draft_p_min"),
        n_gpu_layers_draft=s.int_("n_gpu_layers_draft"), ctx_size_draft=s.int_("ctx_size_draft"),
        ngram_size_n=s.int_("ngram_simple_size_n"), ngram_size_m=s.int_("ngram_simple_size_m"),
        spec_types=tuple(t for t in types if t and t != "none"))
