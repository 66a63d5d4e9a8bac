"""What chat answer parsing costs, and what `n: 4` costs (issue 18), on one of our servers with
the Qwen 2.5 template (Hermes-style `<tool_call>` calls):

    python -m bench.chat_parsing                    # the bench model
    python -m bench.chat_parsing --model tiny-bpe --tokens 64 --reps 4

1. **Parsing A/B**: one stream at a time, a chat request with a tool, `tool_choice: "required"`
   (a grammar makes the model write a real call, so the parser has calls to parse), greedy.
   A parses the answer (tool calls, reasoning); B is the same request with
   `parse_tool_calls: false, reasoning_format: "none"` (no parsing at all: the same grammar,
   the same tokens). Runs interleave A, B, B, A, ...; each run's rate is the server's decode
   rate (timings.predicted_n / predicted_ms: the parser runs on the engine thread, inside it).
   Prints the medians, their spread and B / A - 1; and, since on a busy machine the noise is far
   larger than the cost, the parser alone (in-process, on that answer's streamed pieces): its
   time per token against a token's time.
2. **n: 4**: a chat request with n 4 (its prompt decoded once, three choices copy its cells)
   against the same prompt with n 1 (the prompt's decode) and four n-1 requests of other
   prompts together (four streams' decode). Prints wall times and the server's timings.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from llama.v1 import chat_pb2, service_pb2_grpc

from bench.scrape_overhead import _wait_ready
from bench.servers import free_port
from native.testmodels import ensure_model
from native.testmodels.sources import llama_cpp_models_dir

TOOL = {"type": "function", "function": {"name": "get_weather", "description": "The weather",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string"}, "days": {"type": "integer"},
            "notes": {"type": "array", "items": {"type": "string"}}},
            "required": ["city", "days", "notes"]}}}
TEMPLATE = "Qwen-Qwen2.5-7B-Instruct.jinja"


def _request(words: int, tokens: int, **fields: Any) -> Any:
    text = " ".join(f"word{i}" for i in range(words))
    body = {"messages": [{"role": "user", "content": f"Weather please. {text}"}],
            "n_predict": tokens, "temperature": 0, "cache_prompt": False, "stream": True,
            **fields}
    return json_format.ParseDict(body, chat_pb2.ChatCompletionRequest())


def _stream(stub: Any, req: Any, pieces: list[str] | None = None) -> tuple[
        float, int, float, list[Any]]:
    """(decode rate by the server's timings, tokens, wall seconds, final messages); the
    content deltas go to `pieces` when given."""
    t0 = time.perf_counter()
    finals: list[Any] = []
    tokens = 0
    for msg in stub.ChatCompletion(req, timeout=600):
        if msg.HasField("usage"):
            tokens = msg.usage.completion_tokens
        if pieces is not None:
            pieces += [c.delta.content for c in msg.choices if c.delta.content]
        finals += [msg for c in msg.choices if c.HasField("finish_reason")]
    timings = finals[0].timings if finals else None
    rate = timings.predicted_n * 1e3 / timings.predicted_ms if timings and \
        timings.predicted_ms else 0.0
    return rate, tokens, time.perf_counter() - t0, finals


def _parser_us_per_token(pieces: list[str]) -> float:
    """The parser alone over one answer's streamed pieces (one a token), in-process: its CPU
    time per token, the best of 20 passes."""
    from service.chat_parse import ChatParseConfig, ChatParser
    from service.chat_parse_formats import detect_format

    fmt = detect_format((llama_cpp_models_dir() / "templates" / TEMPLATE).read_text())
    best = float("inf")
    for _ in range(20):
        parser = ChatParser(ChatParseConfig(fmt, "auto", False, max_calls=0))
        t0 = time.perf_counter()
        for piece in pieces:
            parser.feed(piece)
        parser.finish()
        best = min(best, time.perf_counter() - t0)
    return best / max(len(pieces), 1) * 1e6


def parsing_ab(stub: Any, tokens: int, reps: int) -> str:
    base = {"tools": [TOOL], "tool_choice": "required", "parallel_tool_calls": True}
    sides = {"A parsed": _request(16, tokens, **base),
             "B unparsed": _request(16, tokens, **base, parse_tool_calls=False,
                                    reasoning_format="none")}
    pieces: list[str] = []
    _stream(stub, sides["B unparsed"], pieces)  # warm-up; the raw answer's pieces
    runs: dict[str, list[float]] = {k: [] for k in sides}
    counts: dict[str, set[int]] = {k: set() for k in sides}
    for rep in range(reps):
        for name in (list(sides) if rep % 2 == 0 else list(sides)[::-1]):
            rate, n, _, _ = _stream(stub, sides[name])
            runs[name].append(rate)
            counts[name].add(n)
    med = {k: statistics.median(v) for k, v in runs.items()}
    lines = [f"parsing A/B, one stream, tool_choice required, {reps} runs each, interleaved "
             f"(tokens per run: A {sorted(counts['A parsed'])}, B {sorted(counts['B unparsed'])}"
             "; decode tok/s by the server's timings)"]
    for name, rates in runs.items():
        lines.append(f"  {name}: median {med[name]:,.1f} tok/s, spread "
                     f"{min(rates):,.1f}-{max(rates):,.1f} "
                     f"({', '.join(f'{r:,.1f}' for r in rates)})")
    cost = med["B unparsed"] / med["A parsed"] - 1
    lines.append(f"  A/B: B / A - 1 = {cost * 100:+.2f}% (noise included)")
    per_token = _parser_us_per_token(pieces)
    share = per_token * 1e-6 * med["A parsed"]
    lines.append(f"  the parser alone on that answer's {len(pieces)} pieces: "
                 f"{per_token:,.1f} us/token = {share * 100:.3f}% of a token's time at "
                 f"{med['A parsed']:,.1f} tok/s")
    return "\n".join(lines)


def n_choices(stub: Any, words: int, tokens: int, reps: int) -> str:
    lines = [f"n: 4 vs its parts, prompt ~{words * 3} tokens, {tokens} tokens per choice, "
             f"median of {reps}"]
    one, four, conc = [], [], []
    for rep in range(reps):
        _, _, wall1, finals1 = _stream(stub, _request(words, tokens, ignore_eos=True))
        one.append((wall1, finals1[0].timings.prompt_ms, finals1[0].timings.predicted_ms))
        _, _, wall4, finals4 = _stream(stub, _request(words, tokens, ignore_eos=True, n=4))
        four.append((wall4, sorted(m.timings.prompt_n for m in finals4),
                     max(m.timings.predicted_ms for m in finals4)))
        with ThreadPoolExecutor(4) as pool:
            t0 = time.perf_counter()
            outs = list(pool.map(lambda k: _stream(stub, _request(
                words + k + 1, tokens, ignore_eos=True)), range(4 * rep, 4 * rep + 4)))
            wall = time.perf_counter() - t0
        conc.append((wall, max(o[3][0].timings.predicted_ms for o in outs)))
    prompt_ms = statistics.median(p for _, p, _ in one)
    decode4 = statistics.median(d for _, d in conc)
    lines.append(f"  n 1: wall {statistics.median(w for w, _, _ in one) * 1e3:,.0f} ms "
                 f"(prompt {prompt_ms:,.0f} ms, decode "
                 f"{statistics.median(d for _, _, d in one):,.0f} ms)")
    lines.append(f"  four n-1 streams together: wall "
                 f"{statistics.median(w for w, _ in conc) * 1e3:,.0f} ms (decode {decode4:,.0f} "
                 "ms, four prompts decoded too)")
    lines.append(f"  n 4: wall {statistics.median(w for w, _, _ in four) * 1e3:,.0f} ms, "
                 f"choices' prompt_n {four[0][1]} (decoded once), decode "
                 f"{statistics.median(d for _, _, d in four):,.0f} ms; bound: prompt + four "
                 f"streams' decode = {prompt_ms + decode4:,.0f} ms")
    return "\n".join(lines)


def measure(model: Path, tokens: int, reps: int, words: int,
            flags: Sequence[str] = ()) -> str:
    """Both scenarios on a server of our own (4 slots, `flags` added); the report's text."""
    grpc_port, http_port = free_port(), free_port()
    url = f"http://127.0.0.1:{http_port}"
    template = llama_cpp_models_dir() / "templates" / TEMPLATE
    cmd = [sys.executable, "-m", "service.cli", "-m", str(model), "-c", str(4 * 2048), "-np",
           "4", "--chat-template-file", str(template), "--grpc-port", str(grpc_port),
           "--host", "127.0.0.1", "--port", str(http_port), *flags]
    log = Path(tempfile.gettempdir()) / f"chat-parsing-{grpc_port}.log"
    with log.open("w") as out:
        server = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_ready(url, server, log)
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = service_pb2_grpc.LlamaServerStub(channel)
            return (f"{model.name}, template {TEMPLATE}\n" + parsing_ab(stub, tokens, reps)
                    + "\n" + n_choices(stub, words, tokens // 2, max(reps // 2, 1)))
    finally:
        server.terminate()
        server.wait(60)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="bench",
                   help="a GGUF path or a generated model's name (default: bench)")
    p.add_argument("--tokens", type=int, default=128, help="tokens per parsing run")
    p.add_argument("--reps", type=int, default=8, help="runs of each side")
    p.add_argument("--words", type=int, default=150, help="prompt words of the n scenario")
    args = p.parse_args(argv)
    model = Path(args.model) if Path(args.model).is_file() else ensure_model(args.model)
    print(measure(model, args.tokens, args.reps, args.words))
    return 0


if __name__ == "__main__":
    sys.exit(main())
