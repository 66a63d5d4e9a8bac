"""The `/infill` scenario of `python -m bench` (issue 20): what an editor plugin's request costs,
ours (through the REST bridge, and through gRPC to tell the bridge's share) against
llama-server, same model and flags, in one run.

The model is `tiny-fim-repo` (native.testmodels: StarCoder's vocabulary with FIM prefix, suffix,
middle and the repo-level <repo_name>/<file_sep> tokens), so both servers build the repo-level
prompt. The request carries ~2,000 tokens of `input_extra` (several files of code), a prefix and
a suffix, greedy, `ignore_eos`, streamed:

- `infill cold`: `cache_prompt: false` and a first file name no earlier request had, so nothing
  is reused: the whole prompt is processed;
- `infill warm`: the same request again with `cache_prompt: true`: all but the last prompt
  token comes from the slot's cache (the `cache_n` column says how many did).

Each repetition runs cold then warm on each path, the paths' order rotated by repetition.
Reported: time to first token (first streamed event carrying a token) and total time, medians
over repetitions, and llama-server / ours (above 1: ours faster).

    python -m bench --infill-only          # just this (CPU)
    python -m bench --infill-only --cuda   # GPU: CUDA builds, every layer offloaded
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.runner import say
from bench.servers import OurService, ServerSettings, start_llama_server, start_our_service

OURS, OURS_GRPC, THEIRS = "ours (bridge)", "ours (gRPC)", "llama-server"
KINDS = ("cold", "warm")
PREFIX = "def handler(request):\n    data = request.json()\n    result = "
SUFFIX = "\n    return Response(result, status=200)\n"
# One method of a class: files are built of these, a few dozen tokens each, so the total can
# be brought close to the target; names and numbers vary so that no two units are the same.
_UNIT = """    def {verb}_{name}_{n}(self, key: int, limit: int = {limit}) -> list[dict]:
        found = [v for k, v in self.items.items() if k % {n} == key and v.get("{name}")]
        return sorted(found, key=lambda v: str(v.get("{verb}")))[:limit]

"""
_NAMES = ("order", "invoice", "customer", "product", "payment", "shipment", "refund", "coupon",
          "ticket", "review", "account", "session")
_VERBS = ("find", "list", "count", "merge", "check", "load", "store", "match")


@dataclass(frozen=True)
class InfillSample:
    server: str
    kind: str
    rep: int
    ttft_s: float
    total_s: float
    prompt_n: int  # timings.prompt_n: prompt tokens processed
    cache_n: int  # timings.cache_n: prompt tokens reused (-1: not reported)
    predicted_n: int
    content: str


@dataclass
class InfillResult:
    samples: list[InfillSample] = field(default_factory=list)
    extra_tokens: int = 0  # the input_extra texts' tokens, as the model tokenizes them
    skipped: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)  # the HTTP servers, by path


def unit_text(file: int, unit: int) -> str:
    """The `unit`-th method of file `file`."""
    return _UNIT.format(verb=_VERBS[(file + unit) % len(_VERBS)],
                        name=_NAMES[(file * 5 + unit) % len(_NAMES)], n=unit + 2,
                        limit=100 + 7 * file + unit)


def extra_files(target_tokens: int, count_tokens: Callable[[str], int],
                files: int = 8) -> tuple[list[dict[str, str]], int]:
    """`files` files of code whose texts total at least `target_tokens` tokens (methods added
    to each file in turn until they do), and that total as the model tokenizes each file."""
    units: list[list[str]] = [[f"class Store{i}:\n"] for i in range(files)]
    total = sum(count_tokens(u[0]) for u in units)
    n = 0
    while total < target_tokens:
        file = n % files
        text = unit_text(file, len(units[file]))
        units[file].append(text)
        total += count_tokens(text)
        n += 1
    texts = ["".join(u) for u in units]
    return ([{"filename": f"src/store_{i}.py", "text": t} for i, t in enumerate(texts)],
            sum(count_tokens(t) for t in texts))


def body(extra: list[dict[str, str]], salt: int, n_predict: int, warm: bool) -> dict[str, Any]:
    """The request; `salt` renames the first file so that a cold request shares no prefix with
    an earlier one beyond the repo header."""
    first = {**extra[0], "filename": f"src/run{salt}/{extra[0]['filename']}"}
    return {"input_prefix": PREFIX, "input_suffix": SUFFIX, "input_extra": [first, *extra[1:]],
            "prompt": "", "n_predict": n_predict, "temperature": 0.0, "ignore_eos": True,
            "seed": 1234, "cache_prompt": warm, "stream": True}


def stream_infill(client: httpx.Client, url: str, req: dict[str, Any]) -> tuple[
        float, float, dict[str, Any], str]:
    """(time to first token, total time, the final event's timings, the content)."""
    t0 = time.perf_counter()
    t_first = 0.0
    content: list[str] = []
    timings: dict[str, Any] = {}
    with client.stream("POST", url + "/infill", json=req) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{url}/infill: HTTP {r.status_code}: {r.read()[:300]!r}")
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            if "error" in event:
                raise RuntimeError(f"{url}/infill: {event['error']}")
            if not t_first and (event.get("tokens") or event.get("content")):
                t_first = time.perf_counter()
            content.append(event.get("content", ""))
            timings = event.get("timings") or timings
    t_done = time.perf_counter()
    return (t_first or t_done) - t0, t_done - t0, timings, "".join(content)


def _tokenizer(url: str) -> Callable[[str], int]:
    def count(text: str) -> int:
        r = httpx.post(url + "/tokenize", json={"content": text}, timeout=60)
        r.raise_for_status()
        return len(r.json()["tokens"])
    return count


Stream = Callable[[dict[str, Any]], tuple[float, float, dict[str, Any], str]]


def http_stream(client: httpx.Client, url: str) -> Stream:
    def call(req: dict[str, Any]) -> tuple[float, float, dict[str, Any], str]:
        try:
            return stream_infill(client, url, req)
        except httpx.RemoteProtocolError:
            # llama-server's HTTP library closes a kept-alive connection after a few requests;
            # one reused just then fails before anything was processed: send it again.
            return stream_infill(client, url, req)
    return call


def grpc_stream(address: str) -> Stream:
    """Our Infill RPC with the same request (as its JSON mapping), timed as the HTTP ones: the
    bridge's share of the figures is the difference."""
    import grpc
    from google.protobuf import json_format
    from llama.v1 import completion_pb2, service_pb2_grpc

    stub = service_pb2_grpc.LlamaServerStub(grpc.insecure_channel(address))

    def call(req: dict[str, Any]) -> tuple[float, float, dict[str, Any], str]:
        msg = json_format.ParseDict(req, completion_pb2.CompletionRequest())
        t0 = time.perf_counter()
        t_first = 0.0
        content: list[str] = []
        timings: dict[str, Any] = {}
        for chunk in stub.Infill(msg, timeout=600):
            if not t_first and (chunk.tokens or chunk.content):
                t_first = time.perf_counter()
            content.append(chunk.content)
            if chunk.HasField("timings"):
                t = chunk.timings
                timings = {"prompt_n": t.prompt_n, "cache_n": t.cache_n,
                           "predicted_n": t.predicted_n}
        t_done = time.perf_counter()
        return (t_first or t_done) - t0, t_done - t0, timings, "".join(content)
    return call


def _one(call: Stream, server: str, extra: list[dict[str, str]], rep: int,
         n_predict: int) -> list[InfillSample]:
    out = []
    for kind in KINDS:
        ttft, total, t, content = call(body(extra, rep, n_predict, kind == "warm"))
        out.append(InfillSample(server, kind, rep, ttft, total, int(t.get("prompt_n", -1)),
                                int(t.get("cache_n", -1)), int(t.get("predicted_n", -1)),
                                content))
    return out


def run_infill_bench(server_bin: Path | None, settings: ServerSettings, reps: int, out: Path,
                     extra_tokens: int = 2000, n_predict: int = 32,
                     ours: bool = True) -> InfillResult:
    """Both servers up with `settings` (the FIM model, one slot); reps x (cold, warm) on each
    path: our bridge, our gRPC (the same process and slot: a cold request ignores the cache, so
    the paths do not share one), llama-server."""
    result = InfillResult()
    stops: list[Callable[[], None]] = []
    try:
        with httpx.Client(timeout=600) as client:
            paths = _start(settings, server_bin, ours, out, client, result, stops)
            urls = [u for u in (result.urls.get(OURS), result.urls.get(THEIRS)) if u]
            if not urls:
                result.errors.append("infill: no HTTP server to tokenize with")
                return result
            extra, result.extra_tokens = extra_files(extra_tokens, _tokenizer(urls[0]))
            say(f"infill: {len(extra)} files, {result.extra_tokens} tokens of input_extra, "
                f"{reps} runs x {list(paths)}")
            names = list(paths)
            for i, name in enumerate(names):  # warm-up: loads code paths, not measured
                _one(paths[name], name, extra, -1 - i, n_predict)
            for rep in range(reps):
                for name in names[rep % len(names):] + names[:rep % len(names)]:
                    try:
                        result.samples += _one(paths[name], name, extra, rep, n_predict)
                    except Exception as e:  # recorded; the other paths go on
                        result.errors.append(f"infill {name} run {rep}: {e}")
    finally:
        for stop in stops:
            stop()
    return result


def _start(settings: ServerSettings, server_bin: Path | None, ours: bool, out: Path,
           client: httpx.Client, result: InfillResult,
           stops: list[Callable[[], None]]) -> dict[str, Stream]:
    paths: dict[str, Stream] = {}
    if ours:
        svc: OurService = start_our_service(settings, out, bridge=True)
        stops.append(svc.server.stop)
        if svc.rest_url:
            paths[OURS] = http_stream(client, svc.rest_url)
            result.urls[OURS] = svc.rest_url
        else:
            result.skipped[OURS] = svc.rest_skip_reason
        paths[OURS_GRPC] = grpc_stream(svc.grpc_address)
    if server_bin is not None:
        proc, url = start_llama_server(server_bin, settings, out)
        stops.append(proc.stop)
        paths[THEIRS] = http_stream(client, url)
        result.urls[THEIRS] = url
    return paths


def _median(result: InfillResult, server: str, kind: str, attr: str) -> float | None:
    values = [getattr(s, attr) for s in result.samples if s.server == server and s.kind == kind]
    return statistics.median(values) if values else None


def table(result: InfillResult) -> str:
    """Medians per server and kind, and llama-server / ours for both times."""
    lines = [f"/infill with {result.extra_tokens} tokens of input_extra (tiny-fim-repo, "
             "repo-level layout); medians; ratio = llama-server / ours (above 1: ours faster)",
             "",
             "| request | server | TTFT ms | total ms | prompt_n | cache_n | runs | TTFT ratio "
             "| total ratio |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for kind in KINDS:
        for server in (OURS, OURS_GRPC, THEIRS):
            ttft = _median(result, server, kind, "ttft_s")
            if ttft is None:
                continue
            total = _median(result, server, kind, "total_s") or 0.0
            runs = sum(1 for s in result.samples if s.server == server and s.kind == kind)
            ratios = ["", ""]
            base_ttft = _median(result, THEIRS, kind, "ttft_s")
            base_total = _median(result, THEIRS, kind, "total_s")
            if server != THEIRS and base_ttft and base_total:
                ratios = [f"{base_ttft / ttft:.2f}", f"{base_total / total:.2f}"]
            lines.append(f"| infill {kind} | {server} | {ttft * 1e3:,.1f} | {total * 1e3:,.1f} | "
                         f"{_median(result, server, kind, 'prompt_n'):.0f} | "
                         f"{_median(result, server, kind, 'cache_n'):.0f} | {runs} | "
                         f"{ratios[0]} | {ratios[1]} |")
    same = _same_answers(result)
    if same is not None:
        lines.append(f"\nSame generated text on every path (greedy, the same prompt tokens): "
                     f"{same[0]} of {same[1]} requests")
    for server, why in result.skipped.items():
        lines.append(f"\n{server} not measured: {why}")
    return "\n".join(lines)


def _same_answers(result: InfillResult) -> tuple[int, int] | None:
    """For how many (run, request) every path that answered generated the same text, of how
    many at least two answered; None when none did."""
    by_key: dict[tuple[int, str], dict[str, str]] = {}
    for s in result.samples:
        by_key.setdefault((s.rep, s.kind), {})[s.server] = s.content
    both = [set(v.values()) for v in by_key.values() if len(v) >= 2]
    return (sum(1 for v in both if len(v) == 1), len(both)) if both else None


def write_results(result: InfillResult, out: Path) -> str:
    """Append the table to results.md (made if missing), the samples to infill.json."""
    text = "\n## /infill (issue 20)\n\n" + table(result) + "\n"
    with (out / "results.md").open("a", encoding="utf-8") as f:
        f.write(text)
    (out / "infill.json").write_text(json.dumps(
        {"extra_tokens": result.extra_tokens, "samples": [asdict(s) for s in result.samples],
         "skipped": result.skipped, "errors": result.errors}, indent=1))
    return text


def infill_settings(model: Path, threads: int, gpu_layers: int,
                    extra: tuple[str, ...] = ()) -> ServerSettings:
    """One slot of 4,096 tokens (the model's training context: llama-server caps a slot there)
    and -b 1024: llama-server's infill budget for input_extra, n_ctx - n_batch - 2 * n_predict,
    then keeps all of ~2,000 tokens of files and their headers on both servers."""
    return ServerSettings(model, ctx=4096, parallel=1, threads=threads, batch=1024, ubatch=512,
                          gpu_layers=gpu_layers, extra=extra)


def run(server_bin: Path | None, threads: int, gpu_layers: int, extra: tuple[str, ...],
        reps: int, out: Path) -> int:
    """`python -m bench --infill[-only]`: the scenario on tiny-fim-repo, its table printed and
    appended to results.md; 1 if a request failed."""
    from native.testmodels import ensure_model

    settings = infill_settings(ensure_model("tiny-fim-repo"), threads, gpu_layers, extra)
    result = run_infill_bench(server_bin, settings, reps, out)
    print(write_results(result, out))
    for error in result.errors:
        say(error)
    return 1 if result.errors else 0
