"""The requests the differential harness sends to llama-server and to us: every endpoint, the
documented fields with valid, boundary and invalid values, the error paths, and the flags that
change answers. Written from ../shared/spec/llama-server-README.md and from what the pinned
llama-server's handlers read and refuse (tools/server/ in the sdist).

Generation cases are greedy (temperature 0) with a few tokens, so that the text must agree too;
cases that sample compare everything but the generated text (`compare_text=False`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# Flag sets: the model and the flags both servers start with (besides -c 2048 -np 2 -t 2).
FLAG_SETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "default": ("tiny-bpe", ()),
    "spm": ("tiny-spm", ()),
    "api-key": ("tiny-bpe", ("--api-key", "sk-diff")),
    "no-slots": ("tiny-bpe", ("--no-slots",)),
    "n-predict": ("tiny-bpe", ("-n", "3", "--alias", "diff-model")),
    "chatml": ("tiny-bpe", ("--chat-template", "chatml")),
    "reasoning-none": ("tiny-bpe", ("--reasoning-format", "none")),
    "fim": ("tiny-fim-repo", ()),
    "metrics-props": ("tiny-bpe", ("--metrics", "--props", "--slot-save-path", "/tmp")),
    "slots": ("tiny-bpe", ()),  # a pair whose slots only the /slots cases use
}
# the thinking templates' pairs (corpus_reasoning.py), added at the end of this module


@dataclass(frozen=True)
class Case:
    name: str
    method: str
    path: str
    body: Any = None  # JSON body, sent as application/json
    raw: bytes | None = None  # or these exact bytes
    headers: tuple[tuple[str, str], ...] = ()
    flag_set: str = "default"
    compare_text: bool = True
    compare_body: bool = True  # False: status and content type only (e.g. Prometheus text)
    tolerance: float = 0.0  # absolute, for numbers batching moves (embeddings, rerank scores)


GREEDY: dict[str, Any] = {"temperature": 0.0}
PROMPT = "The capital of France is"
MESSAGES = [{"role": "user", "content": "Hello there"}]
PREFILLED = [*MESSAGES, {"role": "assistant", "content": "Hi"}]  # continued (prefill)


def _completion(name: str, fields: dict[str, Any], flag_set: str = "default",
                path: str = "/completion", compare_text: bool = True,
                tolerance: float = 0.0) -> Case:
    body = {"prompt": PROMPT, "n_predict": 4, **GREEDY, **fields}
    return Case(name, "POST", path, body, flag_set=flag_set, compare_text=compare_text,
                tolerance=tolerance)


def _chat(name: str, fields: dict[str, Any], flag_set: str = "default",
          compare_text: bool = True, tolerance: float = 0.0) -> Case:
    body = {"messages": MESSAGES, "max_tokens": 4, **GREEDY, **fields}
    return Case(name, "POST", "/v1/chat/completions", body, flag_set=flag_set,
                compare_text=compare_text, tolerance=tolerance)


# Sampling fields of /completion: each with values that are valid, at a boundary, or invalid.
# (name, values); the request is greedy, so valid values change nothing but the settings echo.
SAMPLING_VALUES: tuple[tuple[str, tuple[Any, ...]], ...] = (
    ("top_k", (0, 1, 40, -1, 1.5, "x")),
    ("top_p", (0.0, 0.5, 1.0, 1.5, -0.1)),
    ("min_p", (0.0, 0.1, 1.0, -1.0)),
    ("typical_p", (0.5, 1.0, 0.0)),
    ("top_n_sigma", (-1.0, 0.0, 1.0)),
    ("xtc_probability", (0.0, 0.5, 1.0)),
    ("xtc_threshold", (0.1, 0.5)),
    ("dynatemp_range", (0.0, 0.5)),
    ("dynatemp_exponent", (1.0, 2.0)),
    ("repeat_penalty", (1.0, 1.1, 0.0)),
    ("repeat_last_n", (0, 64, -1, -2)),
    ("presence_penalty", (0.0, 0.5, -0.5)),
    ("frequency_penalty", (0.0, 0.5)),
    ("dry_multiplier", (0.0, 0.8)),
    ("dry_base", (1.75, 2.0)),
    ("dry_allowed_length", (2, 0)),
    ("dry_penalty_last_n", (-1, 0, 64)),
    ("dry_sequence_breakers", (["\n"], [], ["a", "b"])),
    ("mirostat", (0, 1, 2)),
    ("mirostat_tau", (5.0, 3.0)),
    ("mirostat_eta", (0.1, 0.5)),
    ("min_keep", (0, 1, 5)),
    ("seed", (0, 42, -1, 4294967295)),
    ("n_probs", (0, 1, 3)),
    ("post_sampling_probs", (True, False)),
    ("temperature", (0.0, -1.0, 0.5)),
    ("n_keep", (0, -1, 2)),
    ("n_discard", (0, 4)),
    ("ignore_eos", (True, False)),
    ("cache_prompt", (True, False)),
    ("return_tokens", (True, False)),
    ("timings_per_token", (True, False)),
    ("t_max_predict_ms", (0, 100000)),
    ("n_indent", (0, 4)),
    ("id_slot", (-1, 0, 1)),
    ("n_cmpl", (1,)),
    ("samplers", (["top_k", "temperature"], [], ["k", "p"], "kt", ["nonsense"])),
    ("adaptive_target", (-1.0,)),
    ("backend_sampling", (False,)),
)
# Values that sample (temperature > 0): the text cannot agree, everything else must.
# Sampler lists without a temperature stage leave the draw to the dist sampler.
SAMPLING_NONGREEDY: tuple[tuple[str, Any], ...] = (
    ("temperature", 0.5), ("mirostat", 1), ("mirostat", 2), ("dynatemp_range", 0.5),
    ("samplers", []), ("samplers", ["k", "p"]), ("samplers", ["nonsense"]))


# Token probabilities are compared to their digits, and a prompt's cells may come from a
# cache computed in the batches of an earlier request, whose batch sizes differ between the
# servers and with timing (which slot a request takes); llama.cpp rounds differently by
# batch size (the spec's cache_prompt note says so), which moved a log-probability of -11.1 by
# up to 9e-5 between quiet runs. The same tokens are still required, and the values to 5e-4.
PROBS_TOLERANCE = 5e-4
_PROBS_FIELDS = ("n_probs", "post_sampling_probs")


def _tolerance(name: str) -> float:
    return PROBS_TOLERANCE if name in _PROBS_FIELDS else 0.0


def completion_cases() -> Iterator[Case]:
    for name, values in SAMPLING_VALUES:
        for value in values:
            yield _completion(f"completion {name}={value!r}", {name: value},
                              compare_text=(name, value) not in SAMPLING_NONGREEDY,
                              tolerance=_tolerance(name))
    for n in (0, 1, 5, -2):
        yield _completion(f"completion n_predict={n}", {"n_predict": n})
    # -1 (no limit), kept short: by a grammar that ends, or by the slot's context filling up
    # (the prompt leaves room for a few tokens of the 1,024 a slot holds).
    yield _completion("completion n_predict=-1", {"n_predict": -1, "grammar": 'root ::= "ok"'})
    yield _completion("completion context fills up", {"n_predict": -1,
                                                      "prompt": "word" + " word" * 1010})
    prompts: tuple[tuple[str, Any], ...] = (
        ("string", "Hello"), ("empty string", ""), ("tokens", [9906, 1917]),
        ("mixed", ["Hello", 1917]), ("two prompts", ["Hello", "World"]),
        ("token lists", [[9906], [1917]]), ("empty list", []), ("null", None),
        ("number", 5), ("object", {"prompt_string": "Hi"}), ("bad token", [10**9]),
        ("negative token", [-5]), ("unicode", "Ünïcödé ✓ 日本"), ("special text", "<|eot_id|>x"),
        ("long", "word " * 300),
    )
    for label, prompt in prompts:
        yield _completion(f"completion prompt {label}", {"prompt": prompt})
    stops: tuple[tuple[str, Any], ...] = (
        ("list", [" Paris"]), ("empty list", []), ("string", "x"), ("many", ["a", "b", "c"]),
        ("number", 5), ("null", None),
    )
    for label, stop in stops:
        yield _completion(f"completion stop {label}", {"stop": stop})
    biases: tuple[tuple[str, Any], ...] = (
        ("pairs", [[15, -1.0]]), ("text pair", [["Hello", 0.5]]), ("ban", [[15, False]]),
        ("object", {"15": 2.0}), ("object text", {"Hello": -1.0}), ("empty", []),
        ("bad token", [[10**9, 1.0]]), ("bad shape", [[1]]), ("string", "x"),
        ("object ban", {"15": False}),
    )
    for label, bias in biases:
        yield _completion(f"completion logit_bias {label}", {"logit_bias": bias})
    # the end of generation forced (128009, <|eot_id|>): its text in the probabilities
    # (post-sampling: the logprobs of 128k candidates differ in float32 rounding past 1e-6)
    yield _completion("completion n_probs end of generation", {
        "n_probs": 3, "post_sampling_probs": True, "logit_bias": [[128009, 30.0]],
        "n_predict": 3})
    grammars: tuple[tuple[str, dict[str, Any]], ...] = (
        ("grammar", {"grammar": 'root ::= "yes" | "no"'}),
        ("bad grammar", {"grammar": "root ::= ("}),
        ("empty grammar", {"grammar": ""}),
        ("json_schema", {"json_schema": {"type": "object", "properties": {
            "a": {"type": "integer"}}, "required": ["a"]}}),
        ("json_schema string", {"json_schema": {"type": "string", "maxLength": 3}}),
        ("bad json_schema", {"json_schema": {"type": "nonsense"}}),
        ("both", {"grammar": 'root ::= "x"', "json_schema": {"type": "string"}}),
    )
    for label, fields in grammars:
        yield _completion(f"completion {label}", {"n_predict": 12, **fields})
    for stream in (True, False):
        yield _completion(f"completion stream={stream}", {"stream": stream})
        yield _completion(f"completion stream={stream} n_probs", {"stream": stream, "n_probs": 2})
        yield _completion(f"completion stream={stream} stop", {"stream": stream, "stop": [" "]})
        yield _completion(f"completion stream={stream} two prompts",
                          {"stream": stream, "prompt": ["Hi", "Yo"]})
        yield _completion(f"completion stream={stream} response_fields",
                          {"stream": stream, "response_fields": ["content", "timings/prompt_n"]})
        yield _completion(f"completion stream={stream} return_progress",
                          {"stream": stream, "return_progress": True})
    yield _completion("completions alias", {}, path="/completions")
    for label, fields in (("wrong type n_predict", {"n_predict": "x"}),
                          ("wrong type stream", {"stream": "yes"}),
                          ("wrong type temperature", {"temperature": "hot"}),
                          ("unknown field", {"no_such_field": 1}),
                          ("lora unknown id", {"lora": [{"id": 5, "scale": 1.0}]}),
                          ("lora empty", {"lora": []}),
                          ("image_data", {"image_data": [{"data": "AAAA", "id": 1}]})):
        yield _completion(f"completion {label}", fields)
    # null is the default temperature (0.8): it samples
    yield _completion("completion null temperature", {"temperature": None}, compare_text=False)


def openai_completion_cases() -> Iterator[Case]:
    path = "/v1/completions"
    for label, fields in (
            ("plain", {}), ("max_tokens", {"max_tokens": 3, "n_predict": None}),
            ("stream", {"stream": True}),
            ("stream usage", {"stream": True, "stream_options": {"include_usage": True}}),
            ("echo", {"echo": True}), ("best_of", {"best_of": 2}), ("suffix", {"suffix": "x"}),
            ("logprobs", {"logprobs": 2}), ("stop", {"stop": [" "]}), ("n 1", {"n": 1}),
            ("two prompts", {"prompt": ["Hi", "Yo"]}), ("model", {"model": "whatever"}),
            ("user", {"user": "u"}), ("seed", {"seed": 3}), ("empty prompt", {"prompt": ""}),
            ("no prompt", {"prompt": None}), ("token prompt", {"prompt": [9906, 1917]}),
            ("presence", {"presence_penalty": 0.5}), ("top_p", {"top_p": 0.5}),
            ("logit_bias", {"logit_bias": {"15": -100}})):
        body = {k: v for k, v in fields.items() if v is not None}
        case = _completion(f"v1/completions {label}", {}, path=path)
        merged = {**case.body, **body}
        for k, v in fields.items():
            if v is None:
                merged.pop(k, None)
        yield Case(case.name, "POST", path, merged)


def chat_cases() -> Iterator[Case]:
    contents: tuple[tuple[str, Any], ...] = (
        ("parts", [{"type": "text", "text": "Hello"}, {"type": "text", "text": " there"}]),
        ("empty", ""), ("null", None), ("number", 5), ("image part", [{
            "type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]),
        ("unknown part", [{"type": "video", "video": "x"}]),
    )
    for label, content in contents:
        yield _chat(f"chat content {label}", {"messages": [{"role": "user", "content": content}]})
    conversations: tuple[tuple[str, Any], ...] = (
        ("system", [{"role": "system", "content": "Be brief"}, *MESSAGES]),
        ("assistant last", [*MESSAGES, {"role": "assistant", "content": "Hi"}]),
        ("two assistants last", [*MESSAGES, {"role": "assistant", "content": "Hi"},
                                 {"role": "assistant", "content": "Ho"}]),
        ("multi turn", [*MESSAGES, {"role": "assistant", "content": "Hi"},
                        {"role": "user", "content": "More"}]),
        ("no messages", []), ("missing role", [{"content": "x"}]),
        ("unknown role", [{"role": "wizard", "content": "x"}]),
        ("tool message", [*MESSAGES, {"role": "assistant", "tool_calls": [{
            "id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "42"}]),
        ("messages not list", "hi"), ("message not object", ["hi"]),
        ("message empty object", [{}]), ("assistant without content", [{"role": "assistant"}]),
        ("developer role", [{"role": "developer", "content": "x"}, *MESSAGES]),
    )
    for label, messages in conversations:
        yield _chat(f"chat messages {label}", {"messages": messages})
    tool = {"type": "function", "function": {"name": "get_weather", "description": "Weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]}}}
    fields: tuple[tuple[str, dict[str, Any]], ...] = (
        ("plain", {}), ("stream", {"stream": True}),
        ("stream usage", {"stream": True, "stream_options": {"include_usage": True}}),
        ("n_predict", {"n_predict": 2}), ("max_completion_tokens", {"max_completion_tokens": 2}),
        ("stop", {"stop": [" "]}), ("logprobs", {"logprobs": True, "top_logprobs": 2}),
        ("logprobs stream", {"logprobs": True, "top_logprobs": 2, "stream": True}),
        ("top_logprobs alone", {"top_logprobs": 2}), ("n 1", {"n": 1}), ("n 2", {"n": 2}),
        ("n 2 stream usage", {"n": 2, "stream": True, "stream_options": {"include_usage": True}}),
        ("response_format text", {"response_format": {"type": "text"}}),
        ("response_format json_object", {"response_format": {"type": "json_object"},
                                         "max_tokens": 8}),
        ("response_format json_schema", {"response_format": {"type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "object", "properties": {
                "a": {"type": "integer"}}, "required": ["a"]}}}, "max_tokens": 8}),
        ("response_format bad type", {"response_format": {"type": "yaml"}}),
        ("tools", {"tools": [tool]}), ("tools stream", {"tools": [tool], "stream": True}),
        ("tool_choice none", {"tools": [tool], "tool_choice": "none"}),
        ("tool_choice required", {"tools": [tool], "tool_choice": "required", "max_tokens": 24}),
        ("tool_choice bad", {"tools": [tool], "tool_choice": "sometimes"}),
        ("tools empty", {"tools": []}), ("tools not list", {"tools": "x"}),
        ("parallel_tool_calls", {"tools": [tool], "parallel_tool_calls": True}),
        ("chat_template_kwargs", {"chat_template_kwargs": {"enable_thinking": False}}),
        ("reasoning_format none", {"reasoning_format": "none"}),
        ("reasoning_format deepseek", {"reasoning_format": "deepseek"}),
        ("grammar", {"grammar": 'root ::= "yes"', "max_tokens": 6}),
        ("seed", {"seed": 5}), ("model", {"model": "x"}), ("user", {"user": "u"}),
        ("temperature wrong type", {"temperature": "x"}), ("max_tokens 0", {"max_tokens": 0}),
        ("max_tokens negative", {"max_tokens": -5}), ("logit_bias", {"logit_bias": {"15": 5}}),
        ("timings_per_token", {"timings_per_token": True, "stream": True}),
        ("add_generation_prompt false", {"add_generation_prompt": False}),
        ("continue final", {"messages": [*MESSAGES, {"role": "assistant", "content": "Hi"}],
                            "continue_final_message": True}),
        ("prefill stream", {"messages": PREFILLED, "stream": True}),
        ("continue final content", {"messages": PREFILLED, "continue_final_message": "content",
                                    "add_generation_prompt": False}),
        ("continue final reasoning_content", {
            "messages": [*MESSAGES, {"role": "assistant", "content": "Hi",
                                     "reasoning_content": "Hmm"}],
            "continue_final_message": "reasoning_content", "add_generation_prompt": False}),
        ("continue final stream", {"messages": PREFILLED, "continue_final_message": True,
                                   "add_generation_prompt": False, "stream": True}),
        ("continue final echo stream", {"messages": PREFILLED, "continue_final_message": True,
                                        "add_generation_prompt": False, "stream": True,
                                        "echo": True}),
        ("return_progress", {"stream": True, "return_progress": True}),
    )
    for label, extra in fields:
        yield _chat(f"chat {label}", extra)
    yield Case("chat alias /chat/completions", "POST", "/chat/completions",
               {"messages": MESSAGES, "max_tokens": 3, **GREEDY})
    for flag_set in ("chatml", "n-predict", "reasoning-none", "spm"):
        yield _chat(f"chat [{flag_set}]", {}, flag_set=flag_set)
        yield _chat(f"chat stream [{flag_set}]", {"stream": True}, flag_set=flag_set)


def tokenize_cases() -> Iterator[Case]:
    tok: tuple[tuple[str, Any], ...] = (
        ("plain", {"content": "Hello world"}), ("empty", {"content": ""}),
        ("special", {"content": "<|eot_id|>hi"}),
        ("add_special", {"content": "Hi", "add_special": True}),
        ("parse_special", {"content": "<|eot_id|>", "parse_special": False}),
        ("with_pieces", {"content": "Hello ✓", "with_pieces": True}),
        ("with_pieces unicode split", {"content": "日本語", "with_pieces": True}),
        ("no content", {}), ("content number", {"content": 5}),
        ("content list", {"content": ["a", "b"]}),
        ("content list mixed", {"content": ["Hello", 1917, " world"], "add_special": True}),
        ("content list id first", {"content": [5, "Hi"], "add_special": True}),
        ("content list with_pieces", {"content": [9906, " world"], "with_pieces": True}),
    )
    for label, body in tok:
        yield Case(f"tokenize {label}", "POST", "/tokenize", body)
    detok: tuple[tuple[str, Any], ...] = (
        ("plain", {"tokens": [9906, 1917]}), ("empty", {"tokens": []}), ("none", {}),
        ("bad id", {"tokens": [10**9]}), ("negative", {"tokens": [-1]}),
        ("strings", {"tokens": ["a"]}), ("special", {"tokens": [128009]}),
        ("not list", {"tokens": 5}),
    )
    for label, body in detok:
        yield Case(f"detokenize {label}", "POST", "/detokenize", body)
    for label, body in (("plain", {"messages": MESSAGES}), ("empty", {"messages": []}),
                        ("none", {}), ("system", {"messages": [
                            {"role": "system", "content": "S"}, *MESSAGES]}),
                        ("tools", {"messages": MESSAGES, "tools": [{"type": "function",
                            "function": {"name": "f", "parameters": {"type": "object"}}}]})):
        yield Case(f"apply-template {label}", "POST", "/apply-template", body)
    yield Case("apply-template [chatml]", "POST", "/apply-template", {"messages": MESSAGES},
               flag_set="chatml")


def server_cases() -> Iterator[Case]:
    for flag_set in FLAG_SETS:
        if flag_set == "api-key":
            continue
        yield Case(f"health [{flag_set}]", "GET", "/health", flag_set=flag_set)
        yield Case(f"props [{flag_set}]", "GET", "/props", flag_set=flag_set)
        yield Case(f"v1/models [{flag_set}]", "GET", "/v1/models", flag_set=flag_set)
    for path in ("/models", "/v1/health", "/metrics", "/lora-adapters", "/nothing-here",
                 "/v1/nothing"):
        yield Case(f"GET {path}", "GET", path)
    yield Case("GET /slots [no-slots]", "GET", "/slots", flag_set="no-slots")
    for label, body in (("empty", {}), ("change", {"n_predict": 3})):
        yield Case(f"POST /props {label}", "POST", "/props", body)
    for path in ("/completion", "/v1/chat/completions", "/tokenize"):
        yield Case(f"GET {path} (wrong method)", "GET", path)
    for action in ("save", "restore", "erase", "nonsense"):
        yield Case(f"slot action {action}", "POST", f"/slots/0?action={action}",
                   {"filename": "x.bin"})
    yield Case("slot action bad id", "POST", "/slots/99?action=erase", {})
    yield Case("POST /lora-adapters empty", "POST", "/lora-adapters", [])
    yield Case("POST /lora-adapters bad id", "POST", "/lora-adapters", [{"id": 3, "scale": 1}])
    for path in ("/embedding", "/embeddings", "/v1/embeddings", "/reranking", "/rerank"):
        yield Case(f"POST {path} (generation model)", "POST", path,
                   {"content": "x", "input": "x", "query": "q", "documents": ["a"]})


def body_cases() -> Iterator[Case]:
    raws: tuple[tuple[str, bytes], ...] = (
        ("malformed", b'{"prompt": "x",'), ("array body", b"[1, 2]"), ("string body", b'"x"'),
        ("empty body", b""), ("null body", b"null"), ("nested deep", b"[" * 200 + b"]" * 200),
        ("trailing garbage", b'{"prompt": "x", "n_predict": 1} x'),
        ("bad utf8", b'{"prompt": "\xff\xfe", "n_predict": 1}'),
        ("duplicate keys", b'{"prompt": "x", "prompt": "y", "n_predict": 1, "temperature": 0}'),
        ("nan", b'{"prompt": "x", "n_predict": 1, "temperature": NaN}'),
    )
    for path in ("/completion", "/v1/chat/completions", "/tokenize", "/v1/completions"):
        for label, raw in raws:
            yield Case(f"{path} body {label}", "POST", path, raw=raw)


AUTH_HEADERS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("no key", ()), ("good key", (("authorization", "Bearer sk-diff"),)),
    ("bad key", (("authorization", "Bearer nope"),)), ("x-api-key", (("x-api-key", "sk-diff"),)),
    ("basic", (("authorization", "Basic c2stZGlmZg=="),)))


def first_slots_cases() -> Iterator[Case]:
    """GET /slots before anything else runs on its pair (every slot never used), and a slot
    used then idle. Which free slot a request takes differs (llama-server: the last of those
    used least recently; ours: the first), so the used slot is pinned by id_slot."""
    yield Case("GET /slots", "GET", "/slots")
    yield Case("GET /slots?fail_on_no_slot=1", "GET", "/slots?fail_on_no_slot=1")
    for label, headers in AUTH_HEADERS:
        yield Case(f"auth GET /slots {label}", "GET", "/slots", headers=headers,
                   flag_set="api-key")
    yield _completion("slots completion on slot 1", {"id_slot": 1}, flag_set="slots")
    yield Case("GET /slots after a completion", "GET", "/slots", flag_set="slots")


def auth_cases() -> Iterator[Case]:
    for path, method, body in (("/completion", "POST", {"prompt": "x", "n_predict": 1}),
                               ("/v1/chat/completions", "POST", {"messages": MESSAGES,
                                                                 "max_tokens": 1}),
                               ("/tokenize", "POST", {"content": "x"}),
                               ("/props", "GET", None), ("/health", "GET", None),
                               ("/v1/models", "GET", None), ("/metrics", "GET", None)):
        for label, headers in AUTH_HEADERS:
            full = {**body, **GREEDY} if body else None
            yield Case(f"auth {method} {path} {label}", method, path, full, headers=headers,
                       flag_set="api-key")


def infill_cases() -> Iterator[Case]:
    base = {"input_prefix": "def f():\n", "input_suffix": "\n", "n_predict": 4, **GREEDY}
    variants: tuple[tuple[str, dict[str, Any]], ...] = (
        ("plain", {}), ("prompt", {"prompt": "    "}), ("extra", {"input_extra": [
            {"filename": "a.py", "text": "A = 1\n"}]}),
        ("extra no filename", {"input_extra": [{"text": "A"}]}),
        ("extra no text", {"input_extra": [{"filename": "a"}]}),
        ("extra bad filename", {"input_extra": [{"filename": 1, "text": "x"}]}),
        ("extra not list", {"input_extra": {"text": "x"}}),
        ("prompt not string", {"prompt": [1, 2]}), ("stream", {"stream": True}),
        ("n_indent", {"n_indent": 4}), ("warm-up", {"n_predict": 0, "response_fields": [""]}),
        ("response_fields", {"response_fields": ["content", "timings/prompt_n"]}),
        ("samplers infill", {"samplers": ["top_k", "infill"]}),
    )
    for label, extra in variants:
        yield Case(f"infill {label}", "POST", "/infill", {**base, **extra}, flag_set="fim")
    yield Case("infill (no FIM tokens)", "POST", "/infill", base)


# A subset of SAMPLING_VALUES for the OpenAI routes (their own parsing of the same fields).
OPENAI_SAMPLING = ("top_k", "top_p", "min_p", "seed", "repeat_penalty", "presence_penalty",
                   "frequency_penalty", "n_probs", "mirostat", "dry_multiplier", "samplers",
                   "xtc_probability", "typical_p", "ignore_eos", "cache_prompt", "min_keep")


def openai_sampling_cases() -> Iterator[Case]:
    for name, values in SAMPLING_VALUES:
        if name not in OPENAI_SAMPLING:
            continue
        for value in values[:3]:
            greedy = (name, value) not in SAMPLING_NONGREEDY
            case = _completion(f"v1/completions {name}={value!r}", {name: value},
                               path="/v1/completions", compare_text=greedy,
                               tolerance=_tolerance(name))
            yield case
            yield _chat(f"chat {name}={value!r}", {name: value}, compare_text=greedy,
                        tolerance=_tolerance(name))


def operations_cases() -> Iterator[Case]:
    flags = "metrics-props"
    yield Case("metrics [metrics-props]", "GET", "/metrics", flag_set=flags, compare_body=False)
    bodies: tuple[tuple[str, Any], ...] = (("empty", {}), ("n_predict", {"n_predict": 3}),
                                           ("array", [1]))
    for label, body in bodies:
        yield Case(f"POST /props {label} [metrics-props]", "POST", "/props", body,
                   flag_set=flags)
    for label, path, body in (
            ("save", "/slots/0?action=save", {"filename": "diff-slot.bin"}),
            ("restore missing", "/slots/0?action=restore", {"filename": "no-such-file.bin"}),
            ("erase", "/slots/0?action=erase", {}),
            ("save bad name", "/slots/0?action=save", {"filename": "../escape.bin"}),
            ("save no name", "/slots/0?action=save", {}),
            ("bad action", "/slots/0?action=fly", {}),
            ("no action", "/slots/0", {}),
            ("slot out of range", "/slots/7?action=erase", {}),
            ("slot not a number", "/slots/x?action=erase", {})):
        yield Case(f"slot {label} [metrics-props]", "POST", path, body, flag_set=flags)


def all_cases() -> list[Case]:
    cases = [*first_slots_cases(), *completion_cases(), *openai_completion_cases(),
             *chat_cases(), *tokenize_cases(), *server_cases(), *body_cases(), *auth_cases(),
             *infill_cases(), *openai_sampling_cases(), *operations_cases(), *reasoning_cases(),
             *model_cases(),
             # the default pair's slots after every case above ran there
             Case("GET /slots after the corpus", "GET", "/slots")]
    names = [c.name for c in cases]
    duplicates = {n for n in names if names.count(n) > 1}
    assert not duplicates, f"case names must be unique: {sorted(duplicates)}"
    return cases


# after Case and the shared values exist: corpus_reasoning builds its cases from them
from .corpus_models import MODEL_FLAG_SETS, model_cases  # noqa: E402
from .corpus_reasoning import REASONING_FLAG_SETS, reasoning_cases  # noqa: E402

FLAG_SETS.update(REASONING_FLAG_SETS)
FLAG_SETS.update(MODEL_FLAG_SETS)
