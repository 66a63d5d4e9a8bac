"""The step timeline (service/engine/timeline.py): its aggregation (pure logic), off by default,
and one real run of the engine on tiny-bpe writing its summary when it stops."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from engine_harness import Sink, running_engine

from service.engine.events import Chunk, Finished
from service.engine.params import CompletionParams, SamplingParams
from service.engine.task import Task
from service.engine.timeline import (
    DECODE,
    GPU_WAIT,
    PHASES,
    TIMELINE_ENV,
    StepTimeline,
    Timeline,
    from_env,
    summarize,
)


def _stamps(cpu: dict[str, float] | None = None, **us: float) -> list[float]:
    """A step's stamps: wall µs per phase (keywords), then the thread's CPU µs (`cpu`)."""
    return [us.get(p, 0.0) * 1e-6 for p in PHASES] + [(cpu or {}).get(p, 0.0) * 1e-6
                                                       for p in PHASES]


def test_groups_by_step_size_with_per_step_and_per_token_figures() -> None:
    sizes, stamps = [], []
    for decode_us in (100.0, 200.0, 300.0, 400.0):  # four 8-token generation steps
        sizes += [8, 8]
        stamps += _stamps({"decode": 10.0, "tokens": 30.0}, decode=decode_us, gpu_wait=20.0,
                          tokens=40.0, sample=8.0)
    sizes += [40, 1]  # one prompt step: 40 tokens decoded, one generated
    stamps += _stamps(decode=1000.0, build=50.0)
    s = summarize(sizes, stamps)
    assert s["steps"] == 5 and s["all"]["tokens"] == 33
    big, prompt = s["groups"]  # most steps first
    assert (big["n_tokens"], big["n_generated"], big["steps"], big["tokens"]) == (8, 8, 4, 32)
    step = big["per_step_us"]
    assert step["decode"] == {"mean": 250.0, "p50": 300.0, "p90": 400.0}
    assert step["device"]["mean"] == 270.0  # decode + gpu_wait
    assert step["host"] == {"mean": 48.0, "p50": 48.0, "p90": 48.0}  # tokens + sample
    assert step["step"]["mean"] == 318.0
    assert big["per_token_us"]["tokens"] == 5.0 and big["per_token_us"]["host"] == 6.0
    cpu = big["cpu_per_step_us"]
    assert (cpu["tokens"], cpu["host"], cpu["device"], cpu["step"]) == (30.0, 30.0, 10.0, 40.0)
    assert (prompt["n_tokens"], prompt["steps"]) == (40, 1)
    assert prompt["per_step_us"]["host"]["mean"] == 50.0
    assert s["all"]["per_step_us"]["decode"]["p90"] == 1000.0


def test_empty_summary_and_dropped_steps() -> None:
    s = summarize([], [])
    assert s["steps"] == 0 and s["groups"] == [] and s["all"]["per_step_us"]["host"]["mean"] == 0
    tl = StepTimeline(None, max_steps=1)

    class Ctx:
        launched = (0.0, 0.0)

    ctx = Ctx()
    for n in range(3):
        tl.begin()
        tl.decoded(ctx, 4)
        tl.end(4 * (n + 1))
    tl.begin()
    tl.end(12)  # an iteration that decoded nothing is not a step
    summary = tl.summary()
    assert summary["steps"] == 1 and summary["dropped"] == 2
    assert summary["groups"][0]["n_generated"] == 4


def test_stamps_go_to_the_phase_that_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([0.0, 1.0, 6.0, 10.0])
    cpu_clock = iter([0.0, 0.5, 0.75, 1.0])
    monkeypatch.setattr("service.engine.timeline.time.perf_counter", lambda: next(clock))
    monkeypatch.setattr("service.engine.timeline.time.thread_time", lambda: next(cpu_clock))
    tl = StepTimeline(None)

    class Ctx:  # the decode call returned at 3 s (0.5 s of CPU), its wait for the GPU ended at 6
        launched = (3.0, 0.5)

    tl.begin()  # 0
    tl.mark(1)  # schedule: 1
    tl.decoded(Ctx(), 2)  # decode: 2, gpu_wait: 3
    tl.end(2)  # deliver: 4
    row, n = list(tl.stamps), len(PHASES)
    assert row[1] == 1.0 and row[DECODE] == 2.0 and row[GPU_WAIT] == 3.0 and row[n - 1] == 4.0
    assert row[n + 1] == 0.5 and row[n + DECODE] == 0.0 and row[n + GPU_WAIT] == 0.25
    assert row[-1] == 0.25
    assert list(tl.sizes) == [2, 2]


def test_off_unless_the_variable_names_a_file(monkeypatch: pytest.MonkeyPatch,
                                               tmp_path: Path) -> None:
    monkeypatch.delenv(TIMELINE_ENV, raising=False)
    assert not from_env().enabled
    monkeypatch.setenv(TIMELINE_ENV, "")
    assert not from_env().enabled
    monkeypatch.setenv(TIMELINE_ENV, str(tmp_path / "t.json"))
    on = from_env()
    assert on.enabled and isinstance(on, StepTimeline)
    off = Timeline()
    off.begin()
    off.mark(0)
    off.end(0)
    off.write()  # all nothing: no file, no stamps
    assert not hasattr(off, "stamps")


def test_a_real_engine_writes_its_steps_when_it_stops(tiny_bpe_path: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "timeline.json"
    monkeypatch.setenv(TIMELINE_ENV, str(out))
    params = CompletionParams(n_predict=12, ignore_eos=True,
                              sampling=SamplingParams(temperature=0.0))
    sinks = [Sink() for _ in range(3)]
    with running_engine(tiny_bpe_path, n_ctx=1024, n_seq_max=3) as engine:
        for i, sink in enumerate(sinks):
            engine.submit(Task(f"r{i}", [1, 2, 3 + i, 4], params, sink))
        for sink in sinks:
            assert sink.done.wait(60)
        assert not out.exists()  # written at stop
    for sink in sinks:
        finished = [e for e in sink.events if isinstance(e, Finished)]
        assert finished and len(finished[0].tokens) == 12
        assert any(isinstance(e, Chunk) for e in sink.events)
    s = json.loads(out.read_text())
    assert s["all"]["tokens"] == 36
    # Whatever way the three requests were admitted, the last steps decode all three's
    # generated tokens together, and every phase of those steps took some time.
    full = [g for g in s["groups"] if (g["n_tokens"], g["n_generated"]) == (3, 3)]
    assert full and full[0]["steps"] >= 5
    per_step = full[0]["per_step_us"]
    assert per_step["decode"]["mean"] > 0 and per_step["host"]["mean"] > 0
    assert per_step["tokens"]["mean"] > 0 and per_step["sample"]["mean"] > 0
    assert per_step["step"]["mean"] == pytest.approx(
        per_step["host"]["mean"] + per_step["device"]["mean"], abs=0.2)
    cpu = full[0]["cpu_per_step_us"]
    assert cpu["host"] > 0 and cpu["decode"] > 0  # the CPU backend decodes on this thread


def test_bench_table_takes_each_aggregate_scenarios_steps() -> None:
    from bench.runner import PhaseResult
    from bench.timeline_table import table

    sizes, stamps = [], []
    for _ in range(3):
        sizes += [8, 8]
        stamps += _stamps({"tokens": 50.0, "decode": 2000.0, "gpu_wait": 1000.0},
                          decode=5000.0, gpu_wait=1000.0, tokens=80.0)
    timeline = summarize(sizes, stamps)
    phase = PhaseResult("np8", {"parallel": 8}, timeline=timeline,
                        samples=[{"scenario": "aggregate_8"}, {"scenario": "aggregate_16"},
                                 {"scenario": "single"}])
    text = table([phase, PhaseResult("np64", {"parallel": 64})])  # no timeline: no rows
    rows = [line for line in text.splitlines() if line.startswith("| np")]
    assert rows == ["| np8 | 8 | 3 | 6.08 | 5.00 (2.00) | 1.00 (1.00) | 0.08 (1%) | 0.05 | 10.0 | "
                    "0 | 0 | 0 | 0 | 0 | 80 | 0 |"]  # 16 streams at --parallel 8: 8 a step
    assert table([PhaseResult("np8", {"parallel": 8})]) == ""
