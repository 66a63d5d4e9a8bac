"""What the engine is configured with (EngineSettings) and what it counts (EngineStats)."""

from __future__ import annotations

from dataclasses import dataclass

from service.engine.scheduler import Plan
from service.engine.speculation import SpecStats


@dataclass(frozen=True)
class EngineSettings:
    context_shift: bool = True
    slot_prompt_similarity: float = 0.5
    special: bool = False  # render special (control) tokens in the text, as --special asks
    sampling_threads: int = 1  # threads that sample a step's slots together (--threads-sampling)
    max_queue: int = 0  # requests that may wait for a slot; 0: no limit (--max-queue)
    # A projector is loaded (--mmproj): as llama-server, no context shift and no cache reuse
    # by KV shifting, which could cut through or move a medium's cells.
    multimodal: bool = False


@dataclass
class EngineStats(SpecStats):
    """Counters for /metrics and /slots; written by the engine thread only."""

    prompt_tokens_total: int = 0
    prompt_seconds_total: float = 0.0
    tokens_predicted_total: int = 0
    tokens_predicted_seconds_total: float = 0.0
    n_decode_total: int = 0
    n_busy_slots_total: int = 0
    requests_processing: int = 0
    requests_deferred: int = 0
    decodes_interrupted: int = 0  # redone with the requests of a burst that came meanwhile

    def account(self, plan: Plan, n_running: int, seconds: float) -> None:
        """A decode of `plan` that took `seconds`, its time shared between prompt and
        generated tokens by count."""
        n_gen = sum(len(w.tokens) for w in plan.work if w.request.generating)
        n_tokens = plan.n_tokens
        n_prompt = n_tokens - n_gen
        total = max(n_tokens, 1)
        self.n_decode_total += 1
        self.n_busy_slots_total += n_running
        self.prompt_tokens_total += n_prompt
        self.prompt_seconds_total += seconds * n_prompt / total
        self.tokens_predicted_seconds_total += seconds * n_gen / total
