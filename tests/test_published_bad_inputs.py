"""Issue 22, item 3: the bad inputs published against llama-server, llama-cpp-python and vLLM,
each a named test against one real server (gRPC plus its REST bridge child). Each input gets a
clear 4xx / INVALID_ARGUMENT, or a bounded and correct 200; every answer comes before the
request's deadline; the server keeps serving (a follow-up completion works after every test) and
its peak RSS stays bounded.

The sources: CVE-2026-21869 (negative n_discard), CVE-2025-52566 and CVE-2025-49847 (tokenizer
length overflows), llama.cpp #26600 and #18988 (grammar nesting, `("a"*)*`), #22606 (schema
regex `^+[a-z]$`), CVE-2026-34756 (huge n), CVE-2025-48944 (a tool schema with a bad pattern)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_harness import completion_request
from llama.v1 import service_pb2_grpc
from rest.rest_harness import RestServer

pytestmark = pytest.mark.slow

DEADLINE_S = 120.0  # generous: the test asserts only that the answer came before it
TIMEOUT = httpx.Timeout(DEADLINE_S, connect=10.0)
PEAK_RSS_LIMIT_KIB = 4 * 1024 * 1024  # the tiny model's server peaks far below this


@pytest.fixture(scope="module")
def save_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("slots")


@pytest.fixture(scope="module")
def server(tiny_bpe_path: Path, save_dir: Path) -> Iterator[RestServer]:
    srv = RestServer(tiny_bpe_path, "--slot-save-path", str(save_dir), "--jinja",
                     ctx=4096, parallel=2)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def http(server: RestServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=TIMEOUT) as client:
        yield client


@pytest.fixture(scope="module")
def stub(server: RestServer) -> Iterator[Any]:
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield service_pb2_grpc.LlamaServerStub(channel)


@pytest.fixture(autouse=True)
def still_serving(server: RestServer, http: httpx.Client) -> Iterator[None]:
    """After each test: the server answers a plain completion and its peak RSS is bounded."""
    yield
    srv = server
    assert srv.proc.poll() is None, srv.output()[-4000:]
    r = http.post("/completion", json={"prompt": "Hello", "n_predict": 2})
    assert r.status_code == 200, r.text
    assert r.json()["tokens_predicted"] == 2
    assert peak_rss_kib(srv.proc.pid) < PEAK_RSS_LIMIT_KIB


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def refused(r: httpx.Response, *words: str) -> None:
    """A 400 in llama-server's error shape whose message names `words`."""
    assert r.status_code == 400, (r.status_code, r.text[:500])
    error = r.json()["error"]
    assert error["code"] == 400 and error["type"] == "invalid_request_error"
    for word in words:
        assert word in error["message"], error["message"]


def grpc_refused(stub: Any, *words: str, **fields: Any) -> None:
    fields.setdefault("n_predict", 1)
    with pytest.raises(grpc.RpcError) as err:
        list(stub.Completion(completion_request(**fields), timeout=DEADLINE_S))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    for word in words:
        assert word in (err.value.details() or ""), err.value.details()


def completion(http: httpx.Client, **body: Any) -> httpx.Response:
    body.setdefault("prompt", "Hello")
    body.setdefault("n_predict", 1)
    return http.post("/completion", json=body)


def nested_groups(depth: int) -> str:
    return "root ::= " + "(" * depth + '"a"' + ")" * depth


# -- CVE-2026-21869 --------------------------------------------------------------------------
def test_negative_n_discard(http: httpx.Client, stub: Any) -> None:
    refused(completion(http, n_discard=-1), "n_discard")
    refused(completion(http, n_discard=-(2**31)), "n_discard")
    grpc_refused(stub, "n_discard", prompt="Hello", n_discard=-5)


# -- CVE-2025-52566, CVE-2025-49847: tokenizer length overflows ------------------------------
def test_a_million_newlines(http: httpx.Client) -> None:
    text = "\n" * 1_000_000
    r = http.post("/tokenize", json={"content": text})
    assert r.status_code == 200  # bounded and correct: the tokens give the text back
    tokens = r.json()["tokens"]
    assert 0 < len(tokens) <= 1_000_000
    back = http.post("/detokenize", json={"tokens": tokens})
    assert back.status_code == 200 and back.json()["content"] == text
    # As a prompt it is longer than the context: refused before any decode.
    r = completion(http, prompt=text)
    assert r.status_code == 400, r.text[:300]
    assert "context" in r.json()["error"]["message"]


def test_extreme_token_piece_buffer(http: httpx.Client) -> None:
    # One "word" of 200,000 characters: its pieces go through the piece buffer one by one.
    word = "x" * 200_000
    r = http.post("/tokenize", json={"content": word, "with_pieces": True})
    assert r.status_code == 200
    pieces = r.json()["tokens"]
    assert "".join(p["piece"] for p in pieces) == word
    # Ids outside the vocabulary never reach token_to_piece.
    for bad in ([2**31 - 1], [-1], [0, 10**9]):
        refused(http.post("/detokenize", json={"tokens": bad}), "token")
    many = http.post("/detokenize", json={"tokens": [pieces[0]["id"]] * 100_000})
    assert many.status_code == 200
    assert many.json()["content"] == pieces[0]["piece"] * 100_000


# -- llama.cpp #26600, #18988: grammars ------------------------------------------------------
def test_grammar_of_60000_nested_groups(http: httpx.Client, stub: Any) -> None:
    refused(completion(http, grammar=nested_groups(60_000)), "grammar")
    grpc_refused(stub, "grammar", prompt="Hello", grammar=nested_groups(60_000))


def test_grammar_nested_empty_repetition(http: httpx.Client) -> None:
    r = completion(http, grammar='root ::= ("a"*)*', n_predict=4)
    if r.status_code == 200:  # bounded and correct: only a's
        assert set(r.json()["content"]) <= {"a"}
    else:
        refused(r, "grammar")


# -- llama.cpp #22606: JSON schema regexes, and a $ref cycle ---------------------------------
def string_schema(pattern: str) -> dict[str, Any]:
    return {"type": "object", "properties": {"s": {"type": "string", "pattern": pattern}},
            "required": ["s"]}


def test_malformed_schema_regex(http: httpx.Client, stub: Any) -> None:
    refused(completion(http, json_schema=string_schema("^+[a-z]$")), "pattern")
    grpc_refused(stub, "pattern", prompt="Hello", json_schema=string_schema("^+[a-z]$"))


def test_schema_regex_of_5000_nested_groups(http: httpx.Client, stub: Any) -> None:
    # Its message used to echo the 10 KB pattern into grpc-message and the details trailer,
    # past gRPC's 16 KiB metadata limit: the bridge saw UNAVAILABLE and answered 503.
    pattern = "^" + "(" * 5_000 + "a" + ")" * 5_000 + "$"
    refused(completion(http, json_schema=string_schema(pattern)), "more characters")
    grpc_refused(stub, prompt="Hello", json_schema=string_schema(pattern))


def test_schema_ref_cycle(http: httpx.Client) -> None:
    cycle = {"$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/b"},
                                             "b": {"$ref": "#/$defs/a"}}}
    refused(completion(http, json_schema=cycle))
    refused(completion(http, json_schema={"$ref": "#"}))


# -- CVE-2026-34756: huge n / n_cmpl ---------------------------------------------------------
@pytest.mark.parametrize("n", [10**6, 2**31 - 1, 2**63 - 1])
def test_huge_n(http: httpx.Client, n: int) -> None:
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "n": n}
    refused(http.post("/v1/chat/completions", json=chat), "n")
    refused(http.post("/v1/completions", json={"prompt": "hi", "max_tokens": 1, "n": n}), "n")
    refused(completion(http, n_cmpl=n), "n_cmpl")


# -- CVE-2025-48944: a tool schema with a bad pattern ----------------------------------------
@pytest.mark.parametrize("tool_choice", ["required", "auto"])
def test_tool_schema_with_a_bad_pattern(http: httpx.Client, tool_choice: str) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": string_schema("^+[a-z]$")}}
    r = http.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "tools": [tool],
        "tool_choice": tool_choice})
    refused(r, "pattern")


# -- sampling values -------------------------------------------------------------------------
def test_negative_dry_allowed_length(http: httpx.Client, stub: Any) -> None:
    refused(completion(http, dry_multiplier=0.8, dry_allowed_length=-1), "dry_allowed_length")
    grpc_refused(stub, "dry_allowed_length", prompt="Hello", dry_allowed_length=-3)


def test_negative_n_probs(http: httpx.Client, stub: Any) -> None:
    refused(completion(http, n_probs=-1), "n_probs")
    grpc_refused(stub, "n_probs", prompt="Hello", n_probs=-1)


@pytest.mark.parametrize("bias", [[[10**9, 1.0]], [[-1, 1.0]], [[2**31, -100.0]],
                                  {"999999999": 5.0}])
def test_logit_bias_outside_the_vocabulary(http: httpx.Client, bias: Any) -> None:
    refused(completion(http, logit_bias=bias), "outside the vocabulary")


# -- slot files ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../escape.bin", "/etc/passwd", "a/../../b.bin", "..",
                                  "sub/dir.bin", "x\x00y.bin"])
def test_slot_file_names_that_traverse(http: httpx.Client, save_dir: Path, name: str) -> None:
    for action in ("save", "restore"):
        r = http.post(f"/slots/0?action={action}", json={"filename": name})
        refused(r, "filename")
    assert not (save_dir.parent / "escape.bin").exists()


def test_slot_file_names_that_follow_symlinks(http: httpx.Client, save_dir: Path,
                                              tmp_path: Path) -> None:
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"not a slot file")
    os.symlink(outside, save_dir / "link.bin")
    os.symlink(tmp_path / "absent.bin", save_dir / "dangling.bin")
    for name in ("link.bin", "dangling.bin"):
        refused(http.post("/slots/0?action=restore", json={"filename": name}), "symbolic link")
        # A save renames a new file over the link: it never writes through it.
        assert http.post("/slots/0?action=save", json={"filename": name}).status_code == 200
        assert not (save_dir / name).is_symlink()
    assert outside.read_bytes() == b"not a slot file"
    assert not (tmp_path / "absent.bin").exists()


# -- Jinja templates that try to escape the sandbox ------------------------------------------
ESCAPES = {
    "subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "globals": "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "endless loop": "{% for x in range(10**9) %}{% for y in range(10**9) %}a{% endfor %}"
                    "{% endfor %}",
}


@pytest.mark.parametrize("name", list(ESCAPES))
def test_jinja_template_escaping_the_sandbox(tiny_bpe_path: Path, name: str) -> None:
    """The template comes from the server's --chat-template (no request carries one): the
    server refuses it at start-up with a clear message, or each chat request that renders it
    gets a clear error; nothing escapes and the process keeps serving."""
    srv = RestServer(tiny_bpe_path, "--jinja", "--chat-template", ESCAPES[name],
                     ctx=1024, parallel=1)
    try:
        try:
            srv.wait_ready()
        except RuntimeError:  # refused at start-up: a non-zero exit naming the template
            assert srv.proc.returncode != 0
            assert "template" in srv.output().lower()
            return
        with httpx.Client(base_url=srv.url, timeout=TIMEOUT) as client:
            body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
            for path in ("/apply-template", "/v1/chat/completions"):
                r = client.post(path, json=body)
                assert r.status_code == 400, r.text[:300]
                assert "template" in r.json()["error"]["message"].lower()
                assert "uid=" not in r.text and "<class" not in r.text
            assert client.post("/completion", json={"prompt": "a", "n_predict": 1}
                               ).status_code == 200
    finally:
        srv.stop()
