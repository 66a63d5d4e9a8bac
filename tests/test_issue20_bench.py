"""bench/infill.py and bench/speculative.py (issue 20's performance scenarios): the command
line, the pure parts (the extra files' budget, the requests, the tables' arithmetic) and a tiny
real run of each against our service and llama-server (when its build is cached), so that
they do not rot. No figure is asserted: timings on a shared machine are noise at this size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import infill, speculative
from bench.__main__ import parse_args
from bench.llama_build import cached_server_build
from bench.servers import ServerSettings
from native.testmodels import ensure_model


def test_the_command_line_reaches_both_benchmarks() -> None:
    args = parse_args(["--infill-only", "--speculative-only", "--spec-target", "bench",
                       "--spec-draft", "tiny-bpe", "--spec-tokens", "16", "--spec-draft-max",
                       "4", "--spec-ours-ngram", "--spec-type ngram-simple"])
    assert (args.infill_only, args.speculative_only) == (True, True)
    assert (args.spec_target, args.spec_draft, args.spec_tokens, args.spec_draft_max) == (
        "bench", "tiny-bpe", 16, 4)
    assert args.spec_ours_ngram == "--spec-type ngram-simple"
    defaults = parse_args([])
    assert not (defaults.infill or defaults.speculative or defaults.infill_only)
    assert (defaults.spec_target, defaults.spec_draft) == ("tiny-bpe", "tiny-bpe-draft")


def test_extra_files_reach_the_token_target_spread_over_the_files() -> None:
    def words(text: str) -> int:  # a stand-in tokenizer: a word a token
        return len(text.split())

    files, total = infill.extra_files(2000, words, files=8)
    assert len(files) == 8 and total >= 2000
    assert total == sum(words(f["text"]) for f in files)
    sizes = [words(f["text"]) for f in files]
    assert max(sizes) - min(sizes) < 2 * max(words(infill.unit_text(0, k)) for k in range(9))
    assert len({f["text"] for f in files}) == 8


def test_a_cold_request_differs_from_earlier_ones_and_its_warm_twin_does_not() -> None:
    files = [{"filename": f"f{i}.py", "text": "x = 1\n"} for i in range(3)]
    cold, warm = infill.body(files, 4, 16, False), infill.body(files, 4, 16, True)
    assert (cold["cache_prompt"], warm["cache_prompt"]) == (False, True)
    assert cold["input_extra"] == warm["input_extra"]
    assert cold["input_extra"][0]["filename"] != infill.body(files, 5, 16, False)[
        "input_extra"][0]["filename"]
    assert cold["input_extra"][1:] == files[1:]


def _infill_sample(server: str, kind: str, rep: int, ttft: float, total: float,
                   content: str = "a") -> infill.InfillSample:
    return infill.InfillSample(server, kind, rep, ttft, total, 2000 if kind == "cold" else 1,
                               0 if kind == "cold" else 1999, 16, content)


def test_the_infill_table_gives_llama_server_over_ours() -> None:
    result = infill.InfillResult(extra_tokens=2000)
    for rep, (ours, theirs) in enumerate([(0.2, 0.4), (0.3, 0.6), (0.1, 0.2)]):
        result.samples += [_infill_sample(infill.OURS, "cold", rep, ours, 2 * ours),
                           _infill_sample(infill.THEIRS, "cold", rep, theirs, 3 * theirs,
                                          "b" if rep else "a")]
    text = infill.table(result)
    row = next(line for line in text.splitlines() if line.startswith("| infill cold | ours"))
    assert row.split("|")[-3:-1] == [" 2.00 ", " 3.00 "], row  # medians 0.2 vs 0.4, 0.4 vs 1.2
    assert "1 of 3 requests" in text


def _spec_sample(scenario: str, server: str, rep: int, decode: float, draft_n: int = -1,
                 accepted: int = -1, content: str = "same",
                 cpu_s: float = -1.0) -> speculative.SpecSample:
    return speculative.SpecSample(scenario, server, rep, decode, decode, 32, draft_n, accepted,
                                  content, cpu_s)


def test_the_speculative_table_reports_acceptance_and_both_ratios(tmp_path: Path) -> None:
    plan = speculative.scenarios(Path("t.gguf"), Path("d.gguf"), 8, gpu=False)[:2]
    base, spec = "no speculation, plain", "draft = target, plain"
    result = speculative.SpecResult(samples=[
        _spec_sample(base, speculative.OURS, 0, 10.0), _spec_sample(base, speculative.THEIRS, 0,
                                                                     20.0),
        _spec_sample(spec, speculative.OURS, 0, 15.0, 40, 30, cpu_s=0.1),
        _spec_sample(spec, speculative.OURS, 1, 15.0, 40, 10, "other", cpu_s=0.06),
        _spec_sample(spec, speculative.THEIRS, 0, 30.0, 8, 8)])
    text = speculative.table(result, plan)
    ours = next(line for line in text.splitlines() if line.startswith(f"| {spec} | ours"))
    cells = [c.strip() for c in ours.split("|")[1:-1]]
    # CPU: 0.16 s over 64 tokens
    assert cells[4:] == ["50.0% of 80", "1/1", "2", "0.50", "1.50", "2.50"], cells
    assert "--spec-type draft-simple" in text
    speculative.write_results(result, plan, tmp_path)
    saved = json.loads((tmp_path / "speculative.json").read_text())
    assert len(saved["samples"]) == 5 and "## Speculative decoding" in (
        tmp_path / "results.md").read_text()


def test_speculative_flags_and_requests() -> None:
    plan = speculative.scenarios(Path("t.gguf"), Path("d.gguf"), 6, gpu=True,
                                 ours_ngram=["--ours-ngram"])
    assert [(s.name, s.prompt) for s in plan] == [
        ("no speculation", "plain"), ("draft = target", "plain"), ("disagreeing draft", "plain"),
        ("no speculation", "repetitive"), ("n-gram", "repetitive"),
        ("no speculation", speculative.BIASED), ("n-gram", speculative.BIASED)]
    assert plan[1].flags[:4] == ("-md", "t.gguf", "--spec-type", "draft-simple")
    assert plan[2].flags[1] == "d.gguf" and plan[2].flags[-2:] == ("-ngld", "999")
    assert "6" in plan[1].flags and plan[4].ours_flags == ("--ours-ngram",)
    assert not plan[0].speculative and plan[4].speculative
    plain, rep = speculative.request("plain", 3, 16), speculative.request("repetitive", 3, 16)
    assert len(plain["prompt"]) == 32 and "grammar" not in plain
    assert plain["prompt"] != speculative.request("plain", 4, 16)["prompt"]
    assert rep["grammar"] == speculative.GRAMMAR and speculative.LINE * 16 in rep["prompt"]
    biased = speculative.request(speculative.BIASED, 3, 16)
    assert biased["logit_bias"] == [[speculative.LINE, 30]] and "grammar" not in biased
    assert plan[6].flags == plan[4].flags


@pytest.mark.slow
def test_a_tiny_infill_run_measures_both_servers(tmp_path: Path) -> None:
    build = cached_server_build()
    settings = infill.infill_settings(ensure_model("tiny-fim-repo"), 1, 0)
    result = infill.run_infill_bench(build.llama_server if build else None, settings, 1,
                                     tmp_path, extra_tokens=300, n_predict=4)
    servers = {infill.OURS, infill.OURS_GRPC} | ({infill.THEIRS} if build else set())
    assert not result.errors and {s.server for s in result.samples} == servers
    for s in result.samples:  # cold: the whole prompt; warm: all but one token from the cache
        assert (s.cache_n == 0) if s.kind == "cold" else (s.prompt_n == 1 and s.cache_n > 300)
        assert s.predicted_n == 4 and 0 < s.ttft_s <= s.total_s
    assert len({(s.prompt_n + s.cache_n) for s in result.samples}) == 1  # the same prompt
    assert "| infill warm | ours (bridge) |" in infill.write_results(result, tmp_path)


@pytest.mark.slow
def test_a_tiny_speculative_run_measures_both_servers(tmp_path: Path) -> None:
    build = cached_server_build()
    target = ensure_model("tiny-bpe")
    plan = speculative.scenarios(target, ensure_model("tiny-bpe-draft"), 4, gpu=False)[:2]
    base = ServerSettings(target, ctx=1024, parallel=1, threads=1)
    result = speculative.run_speculative_bench(build.llama_server if build else None, base,
                                               plan, 1, 8, tmp_path)
    assert not result.errors and not result.skipped
    paths = {speculative.OURS} | ({speculative.THEIRS} if build else set())
    for server in paths:  # the same weights: every drafted token is accepted
        spec = next(s for s in result.samples if s.server == server and
                    s.scenario.startswith("draft = target"))
        assert spec.draft_n > 0 and spec.draft_accepted == spec.draft_n, spec
    assert all(s.predicted_n == 8 for s in result.samples)
    assert {(s.scenario, s.server) for s in result.samples} == {
        (f"{sc.name}, {sc.prompt}", p) for sc in plan for p in paths}


def test_the_cheap_agreeing_draft_runs_on_its_own_target() -> None:
    target, draft = Path("/m/spm-deep.gguf"), Path("/m/spm-deep-draft.gguf")
    plan = speculative.scenarios(Path("/m/t.gguf"), Path("/m/d.gguf"), 8, gpu=False,
                                 deep=(target, draft))
    pair = [sc for sc in plan if sc.prompt == speculative.DEEP]
    assert [(sc.name, sc.target) for sc in pair] == [
        (speculative.BASELINE, target), ("cheap agreeing draft", target)]
    assert pair[1].flags[:2] == ("-md", str(draft)) and not pair[0].flags
    assert all(sc.target is None for sc in plan if sc.prompt != speculative.DEEP)
    ids = speculative.request(speculative.DEEP, 0, 8)["prompt"]
    assert len(ids) == 32 and all(1000 <= i < 32_000 for i in ids)  # Llama 2's vocabulary


def test_server_cpu_counts_every_thread_of_a_process_and_its_children() -> None:
    # a child whose second thread burns 0.3 s of CPU, then stays: seen from this process's pid
    code = ("import threading, time\n"
            "def burn():\n"
            "    t = time.thread_time()\n"
            "    while time.thread_time() - t < 0.3: pass\n"
            "    time.sleep(60)\n"
            "threading.Thread(target=burn, daemon=True).start()\n"
            "time.sleep(60)\n")
    before = speculative.server_cpu_s(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 30
        while speculative.server_cpu_s(os.getpid()) - before < 0.3:
            assert time.monotonic() < deadline, "the child's CPU time was not counted"
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait()
