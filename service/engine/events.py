"""What the engine sends to a generation's stream: frozen records, built on the engine thread."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from array import array


@dataclass(frozen=True)
class Timings:
    prompt_n: int
    prompt_ms: float
    predicted_n: int
    predicted_ms: float
    draft_n: int = 0  # speculative decoding: tokens drafted and verified (0: none)
    draft_n_accepted: int = 0

    @property
    def prompt_per_token_ms(self) -> float:
        return self.prompt_ms / self.prompt_n if self.prompt_n else 0.0

    @property
    def prompt_per_second(self) -> float:
        return 1e3 * self.prompt_n / self.prompt_ms if self.prompt_ms > 0 else 0.0

    @property
    def predicted_per_token_ms(self) -> float:
        return self.predicted_ms / self.predicted_n if self.predicted_n else 0.0

    @property
    def predicted_per_second(self) -> float:
        return 1e3 * self.predicted_n / self.predicted_ms if self.predicted_ms > 0 else 0.0


@dataclass(frozen=True)
class TokenProbs:
    """One generated token's probability record (llama-server's completion_probabilities item).

    `value` is a log-probability, or a probability when `post_sampling` is true; `top` holds
    (token id, value) pairs of the most likely candidates, best first.
    """

    id: int
    value: float
    top: tuple[tuple[int, float], ...]
    post_sampling: bool


@dataclass(frozen=True)
class Started:
    id: str
    slot_id: int
    n_prompt: int
    tokens_cached: int


@dataclass(frozen=True)
class Progress:
    """Prompt processing so far (llama-server's prompt_progress; return_progress)."""

    total: int  # prompt tokens
    cache: int  # of which reused from the slot's cache
    processed: int  # in the cells now, cache included
    time_ms: float  # since the request took its slot


@dataclass(frozen=True)
class Chunk:
    text: str
    tokens: tuple[int, ...]
    probs: tuple[TokenProbs, ...] = ()
    timings: Timings | None = None  # only with timings_per_token


@dataclass(frozen=True)
class Finished:
    stop_type: str  # "eos" | "limit" | "word"
    stopping_word: str
    truncated: bool
    tokens_cached: int
    tokens_evaluated: int
    timings: Timings
    content: str  # the whole generated text, stop string excluded
    tokens: tuple[int, ...]  # every generated token


@dataclass(frozen=True)
class Failed:
    code: str  # "invalid_argument" | "cancelled" | "unavailable" | "internal"
    message: str


@dataclass(frozen=True)
class Embedded:
    """An embedding input's result, its last event: one pooled vector (a reranker's class
    scores for pooling `rank`), or with pooling `none` one unnormalized vector per token."""

    vectors: tuple[array[float], ...]  # float32 (typecode "f")
    n_tokens: int  # tokens evaluated


Event = Started | Progress | Chunk | Finished | Failed | Embedded
