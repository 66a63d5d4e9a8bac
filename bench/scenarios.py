"""The scenarios of the benchmark: what each sends, and the numbers it reads off the results.

A scenario builds its lanes (bench.load) from fresh prompts for every run, so no run can hit a
prompt another run left in a server's cache, except where the scenario means to (prefix reuse).
Each run yields named values; `higher` says which direction is better for each.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench.clients import GenRequest, StreamResult
from bench.load import Lane

# Token ids drawn for prompts: ordinary tokens of the 128k Llama 3 vocabulary (the special ones
# start at 128000).
_TOKEN_RANGE = (1000, 120000)


class PromptMaker:
    """Random token prompts; each one starts with a token no earlier prompt started with."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._first = list(range(*_TOKEN_RANGE))
        self._rng.shuffle(self._first)

    def unique(self, n: int) -> tuple[int, ...]:
        first = self._first.pop()
        return (first, *(self._rng.randrange(*_TOKEN_RANGE) for _ in range(n - 1)))


@dataclass(frozen=True)
class Sizes:
    """The knobs of the scenarios (CLI options); defaults follow the issue."""

    gen_tokens: int = 128  # single stream
    agg_tokens: int = 128  # per stream in the aggregate scenarios
    short_prompt: int = 32
    long_prompt: int = 512
    prefix: int = 1000
    suffix: int = 24
    ttft_requests: int = 10  # per run, idle
    load_requests: int = 3  # per lane and run, under load (the first of each lane is dropped)
    load_lanes: int = 8


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    higher: bool  # True: more is better (throughput); False: less is better (latency)


Values = dict[str, list[float]]


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    metrics: tuple[Metric, ...]
    lanes: Callable[[PromptMaker, Sizes], list[Lane]]
    read: Callable[[Sequence[tuple[StreamResult, ...]], Sizes], Values]
    streams: int = 1  # concurrent streams, for the plot of aggregate throughput


TOK_S = "tok/s"
MS = "ms"
AGGREGATE_PREFIX = "aggregate_"


def _gen(pm: PromptMaker, s: Sizes, n_predict: int | None = None) -> GenRequest:
    return GenRequest(pm.unique(s.short_prompt), s.gen_tokens if n_predict is None else n_predict)


def _single(pm: PromptMaker, s: Sizes) -> list[Lane]:
    return [(_gen(pm, s),)]


def _read_single(res: Sequence[tuple[StreamResult, ...]], s: Sizes) -> Values:
    r = res[0][0]
    return {"decode": [r.decode_rate], "end_to_end": [r.n_generated / (r.t_done - r.t_send)]}


def _prompt(pm: PromptMaker, s: Sizes) -> list[Lane]:
    return [(GenRequest(pm.unique(s.long_prompt), 1),)]


def _read_prompt(res: Sequence[tuple[StreamResult, ...]], s: Sizes) -> Values:
    r = res[0][0]
    return {"prompt": [s.long_prompt / r.ttft]}


def aggregate(streams: int) -> Scenario:
    def lanes(pm: PromptMaker, s: Sizes) -> list[Lane]:
        return [(_gen(pm, s, s.agg_tokens),) for _ in range(streams)]

    def read(res: Sequence[tuple[StreamResult, ...]], s: Sizes) -> Values:
        flat = [r for lane in res for r in lane]
        span = max(r.t_done for r in flat) - min(r.t_send for r in flat)
        return {"aggregate": [sum(r.n_generated for r in flat) / span],
                "ttft": [r.ttft * 1e3 for r in flat]}

    return Scenario(f"{AGGREGATE_PREFIX}{streams}", f"aggregate generation, {streams} streams",
                    (Metric("aggregate", TOK_S, True), Metric("ttft", MS, False)),
                    lanes, read, streams)


def aggregate_streams(scenario_name: str) -> int | None:
    """The stream count of an aggregate scenario's name (as results.json rows carry it)."""
    rest = scenario_name.removeprefix(AGGREGATE_PREFIX)
    return int(rest) if rest != scenario_name and rest.isdigit() else None


def _ttft_idle(pm: PromptMaker, s: Sizes) -> list[Lane]:
    return [tuple(_gen(pm, s, 1) for _ in range(s.ttft_requests))]


def _read_ttft(res: Sequence[tuple[StreamResult, ...]], s: Sizes) -> Values:
    return {"ttft": [r.ttft * 1e3 for lane in res for r in lane]}


def _ttft_load(pm: PromptMaker, s: Sizes) -> list[Lane]:
    # Varied lengths keep the lanes from finishing in the same step and arriving together.
    return [tuple(_gen(pm, s, 8 + (7 * lane + 5 * j) % 32) for j in range(s.load_requests))
            for lane in range(s.load_lanes)]


def _read_ttft_load(res: Sequence[tuple[StreamResult, ...]], s: Sizes) -> Values:
    # The first request of every lane arrives together with all the others: not "under load".
    return {"ttft": [r.ttft * 1e3 for lane in res for r in lane[1:]]}


def _prefix(pm: PromptMaker, s: Sizes) -> list[Lane]:
    shared = pm.unique(s.prefix)
    prime = GenRequest(shared + pm.unique(s.suffix), 1)
    warm = GenRequest(shared + pm.unique(s.suffix), 1)
    cold = GenRequest(pm.unique(s.prefix + s.suffix), 1)
    return [(prime, warm, cold)]


def _read_prefix(res: Sequence[tuple[StreamResult, ...]], s: Sizes) -> Values:
    _, warm, cold = res[0]
    return {"warm_ttft": [warm.ttft * 1e3], "cold_ttft": [cold.ttft * 1e3],
            "warm_cached": [float(warm.n_cached)]}


SINGLE = Scenario("single", "single stream",
                  (Metric("decode", TOK_S, True), Metric("end_to_end", TOK_S, True)),
                  _single, _read_single)
PROMPT = Scenario("prompt", "prompt processing", (Metric("prompt", TOK_S, True),),
                  _prompt, _read_prompt)
TTFT_IDLE = Scenario("ttft_idle", "time to first token, idle", (Metric("ttft", MS, False),),
                     _ttft_idle, _read_ttft)
PREFIX = Scenario("prefix", "prefix reuse, 1,000 shared tokens",
                  (Metric("warm_ttft", MS, False), Metric("cold_ttft", MS, False),
                   Metric("warm_cached", "tokens", True)),
                  _prefix, _read_prefix)


def ttft_load(lanes: int) -> Scenario:
    """First tokens while `lanes` streams (one per slot: Sizes.load_lanes) keep the server busy."""
    return Scenario("ttft_load", f"time to first token, {lanes} streams busy",
                    (Metric("ttft", MS, False),), _ttft_load, _read_ttft_load, lanes)


def main_scenarios(concurrency: Sequence[int], load_lanes: int) -> list[Scenario]:
    """Every scenario at the first server setting (--parallel, 8 by default)."""
    return [SINGLE, PROMPT, *(aggregate(n) for n in concurrency), TTFT_IDLE,
            ttft_load(load_lanes), PREFIX]
