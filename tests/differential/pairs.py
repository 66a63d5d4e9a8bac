"""Server pairs: llama-server (built from the pinned source by bench.llama_build) and ours
(gRPC service + REST bridge), started with the same model and the same flags, one pair per
flag set of the corpus, and the one way a case is sent to both."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.llama_build import ensure_server_build
from bench.servers import ServerProcess, ServerSettings, start_llama_server, start_our_service
from native.testmodels import ensure_model

from .compare import Answer, parse_answer
from .corpus import FLAG_SETS, Case


@dataclass
class ServerPair:
    flag_set: str
    reference_url: str
    our_url: str
    processes: list[ServerProcess] = field(default_factory=list)

    def stop(self) -> None:
        for p in self.processes:
            p.stop()

    def send(self, case: Case) -> tuple[Answer, Answer]:
        return _send(self.reference_url, case), _send(self.our_url, case)


def _send(base: str, case: Case) -> Answer:
    headers = dict(case.headers)
    content: bytes | None = None
    if case.raw is not None:
        content = case.raw
        headers.setdefault("content-type", "application/json")
    elif case.body is not None:
        content = json.dumps(case.body).encode()
        headers.setdefault("content-type", "application/json")
    with httpx.Client(base_url=base, timeout=120.0) as client:
        r = client.request(case.method, case.path, content=content, headers=headers)
        return parse_answer(r.status_code, r.headers.get("content-type", ""), r.content)


def start_pair(flag_set: str, log_dir: Path) -> ServerPair:
    model_name, named_flags = FLAG_SETS[flag_set]
    # a flag value "model:NAME" is the path of test model NAME (an adapter, a draft model)
    flags = [str(ensure_model(f[6:])) if f.startswith("model:") else f for f in named_flags]
    settings = ServerSettings(model=ensure_model(model_name), ctx=2048, parallel=2, threads=2,
                              extra=tuple(flags))
    binary = ensure_server_build().llama_server
    log_dir.mkdir(parents=True, exist_ok=True)
    ref, ref_url = start_llama_server(binary, settings, log_dir)
    try:
        ours = start_our_service(settings, log_dir, bridge=True)
    except BaseException:
        ref.stop()
        raise
    if not ours.rest_url:
        ref.stop()
        ours.server.stop()
        raise RuntimeError(f"our REST bridge did not start: {ours.rest_skip_reason}")
    return ServerPair(flag_set, ref_url, ours.rest_url, [ref, ours.server])


class Pairs:
    """One pair per flag set, started when a case first needs it, all stopped at the end."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._pairs: dict[str, ServerPair] = {}

    def get(self, flag_set: str) -> ServerPair:
        if flag_set not in self._pairs:
            self._pairs[flag_set] = start_pair(flag_set, self._log_dir / flag_set)
        return self._pairs[flag_set]

    def stop(self) -> None:
        for pair in self._pairs.values():
            pair.stop()

    def __iter__(self) -> Iterator[ServerPair]:
        return iter(self._pairs.values())
