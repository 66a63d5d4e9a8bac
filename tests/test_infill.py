"""Infill (POST /infill, issue 20 items 1-2): the fill-in-the-middle layout on real FIM
vocabularies (repo-level and plain), its budgets, and the RPC through the real service: the
prompt it evaluates, the editor-plugin options that cut a generation (n_indent,
t_max_predict_ms), and the refusals (a model without FIM tokens, a non-string prompt)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from grpc_harness import GREEDY, running_service
from llama.v1 import completion_pb2

from native.model import Model, ModelParams
from native.testmodels import ensure_model
from service.errors import ServiceError
from service.infill import InfillBudget, infill_prompt

WIDE = InfillBudget(n_batch=2048, n_predict=-1, n_ctx=4096, spm=False)


def _vocab(name: str) -> Any:
    return Model(ensure_model(name), ModelParams(vocab_only=True)).vocab


@pytest.fixture(scope="module")
def repo_vocab() -> Any:
    return _vocab("tiny-fim-repo")  # StarCoder's vocabulary with FIM_REP and FIM_SEP named


@pytest.fixture(scope="module")
def plain_vocab() -> Any:
    return _vocab("tiny-fim")  # DeepSeek Coder's: prefix/suffix/middle only, and a BOS


def _t(vocab: Any, text: str) -> list[int]:
    return list(vocab.tokenize(text, add_special=False, parse_special=False))


def test_the_repo_level_layout(repo_vocab: Any) -> None:
    v, fim = repo_vocab, repo_vocab.fim_tokens()
    prompt = _t(v, "x = ")
    got = infill_prompt(v, "def f():\n", "\nreturn 1\n", [("a.py", "import os\n")], prompt, WIDE)
    assert got == [fim["rep"], *_t(v, "myproject\n"), fim["sep"], *_t(v, "a.py\n"),
                   *_t(v, "import os\n"), fim["sep"], *_t(v, "filename\n"),
                   fim["pre"], *_t(v, "def f():\n"), *prompt,
                   fim["suf"], *_t(v, "\nreturn 1\n"), fim["mid"]]
    spm = infill_prompt(v, "p", "s", [], [], InfillBudget(2048, -1, 4096, spm=True))
    tail = [fim["suf"], *_t(v, "s"), fim["pre"], *_t(v, "p"), fim["mid"]]
    assert spm[-len(tail):] == tail  # --spm-infill: suffix first


def test_the_plain_layout_puts_snippets_then_bos(plain_vocab: Any) -> None:
    v, fim = plain_vocab, plain_vocab.fim_tokens()
    assert v.add_bos and fim["rep"] < 0 and fim["sep"] < 0
    got = infill_prompt(v, "a", "b", [("ignored.py", "one"), ("", "two")], [], WIDE)
    separator = _t(v, "\n\n--- snippet ---\n\n")
    assert got == [*separator, *_t(v, "one"), *separator, *_t(v, "two"), v.bos,
                   fim["pre"], *_t(v, "a"), fim["suf"], *_t(v, "b"), fim["mid"]]


def test_budgets_keep_the_end_of_the_prefix_and_the_start_of_the_suffix(
        plain_vocab: Any) -> None:
    v, fim = plain_vocab, plain_vocab.fim_tokens()
    prefix, suffix = _t(v, " p" * 100), _t(v, " s" * 100)
    extra = _t(v, "\n\n--- snippet ---\n\n") + _t(v, " e" * 100)
    budget = InfillBudget(n_batch=64, n_predict=8, n_ctx=64 + 16 + 10, spm=False)
    prompt = _t(v, " q")
    got = infill_prompt(v, " p" * 100, " s" * 100, [("f", " e" * 100)], prompt, budget)
    n_suffix = 64 // 4 - (2 + len(prompt))
    assert got == [*extra[-10:], v.bos, fim["pre"], *prefix[-48:], *prompt,
                   fim["suf"], *suffix[:n_suffix], fim["mid"]]


def test_a_vocabulary_without_fim_tokens_is_refused(tiny_bpe_path: Path) -> None:
    vocab = Model(tiny_bpe_path, ModelParams(vocab_only=True)).vocab
    with pytest.raises(ServiceError) as e:
        infill_prompt(vocab, "a", "b", [], [], WIDE)
    assert e.value.kind == "unimplemented"
    assert e.value.message == ("Infill is not supported by this model: prefix token is missing. "
                               "suffix token is missing. middle token is missing. ")


# -- through the service ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def fim_stub() -> Iterator[Any]:
    # A batch smaller than a slot leaves room for extra context (n_ctx - n_batch - 2 * -n).
    with running_service(ensure_model("tiny-fim-repo"), "-b", "256", "-ub", "256", ctx=2048,
                         parallel=2) as svc:
        yield svc.stub()


def _infill(stub: Any, **fields: Any) -> tuple[list[Any], grpc.StatusCode, str]:
    req = json_format.ParseDict({"stream": True, **fields}, completion_pb2.CompletionRequest())
    messages: list[Any] = []
    try:
        messages.extend(stub.Infill(req, timeout=60))
    except grpc.RpcError as e:
        return messages, e.code(), e.details() or ""
    return messages, grpc.StatusCode.OK, ""


@pytest.mark.slow
def test_infill_evaluates_the_layout(fim_stub: Any, repo_vocab: Any) -> None:
    fields = {"input_prefix": "def add(a, b):\n", "input_suffix": "\n", "prompt": "    ",
              "input_extra": [{"filename": "util.py", "text": "X = 1\n"}]}
    messages, code, details = _infill(fim_stub, **fields, n_predict=4, **GREEDY)
    assert code == grpc.StatusCode.OK, details
    final = messages[-1]
    expected = infill_prompt(repo_vocab, "def add(a, b):\n", "\n", [("util.py", "X = 1\n")],
                             list(repo_vocab.tokenize("    ", add_special=False,
                                                      parse_special=True)),
                             InfillBudget(256, -1, 1024, spm=False))
    assert final.stop and final.tokens_evaluated == len(expected)
    assert final.prompt.startswith("<repo_name>myproject\n<file_sep>util.py\nX = 1\n")
    assert final.prompt.endswith("<fim_suffix>\n<fim_middle>")
    assert final.tokens_predicted == 4


@pytest.mark.slow
def test_a_repeated_request_evaluates_the_same_prompt(fim_stub: Any) -> None:
    # the second request's input_extra tokens come from service.infill's ExtraTokens
    extra = [{"filename": f"m{i}.py", "text": f"def f{i}(x):\n    return x + {i}\n"}
             for i in range(4)]
    answers = []
    for prefix in ("def g(y):\n", "def g(y):\n", "def h(z):\n"):
        messages, code, details = _infill(fim_stub, input_prefix=prefix, input_suffix="\n",
                                          input_extra=extra, n_predict=4, **GREEDY)
        assert code == grpc.StatusCode.OK, details
        answers.append((messages[-1].prompt, messages[-1].tokens_evaluated,
                        "".join(m.content for m in messages)))
    assert answers[1] == answers[0]
    assert answers[2][0] == answers[0][0].replace("def g(y)", "def h(z)")


@pytest.mark.slow
def test_n_indent_cuts_a_generation(fim_stub: Any) -> None:
    # The grammar writes an indented line, then one that is not: n_indent 4 stops it there.
    messages, code, details = _infill(
        fim_stub, input_prefix="if x:\n", input_suffix="", n_indent=4, n_predict=64,
        grammar='root ::= "    a = 1\\nb" [a-z]*', **GREEDY)
    assert code == grpc.StatusCode.OK, details
    final = messages[-1]
    text = "".join(m.content for m in messages)
    assert final.stop_type == "limit" and final.tokens_predicted < 64
    assert text == "    a = 1\n"  # the line starting at column 0 is cut before its text


@pytest.mark.slow
def test_t_max_predict_ms_cuts_a_generation_after_a_new_line(fim_stub: Any) -> None:
    messages, code, details = _infill(
        fim_stub, input_prefix="x", input_suffix="", t_max_predict_ms=1, n_predict=400,
        grammar='root ::= "a\\n" [a-z ]*', **GREEDY)
    assert code == grpc.StatusCode.OK, details
    final = messages[-1]
    assert final.stop_type == "limit" and 2 <= final.tokens_predicted < 400


@pytest.mark.slow
def test_refusals(fim_stub: Any, grpc_service: Any) -> None:
    _, code, details = _infill(fim_stub, input_prefix="a", input_suffix="b", prompt=[1, 2])
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details == '"prompt" must be a string'
    _, code, details = _infill(grpc_service.stub(), input_prefix="a", input_suffix="b")
    assert code == grpc.StatusCode.UNIMPLEMENTED
    assert details.startswith("Infill is not supported by this model: prefix token is missing.")


@pytest.mark.slow
def test_spm_infill_puts_the_suffix_first() -> None:
    with running_service(ensure_model("tiny-fim-repo"), "--spm-infill", ctx=512,
                         parallel=1) as svc:
        messages, code, details = _infill(svc.stub(), input_prefix="PRE", input_suffix="SUF",
                                          n_predict=1)
    assert code == grpc.StatusCode.OK, details
    assert messages[-1].prompt == "<fim_suffix>SUF<fim_prefix>PRE<fim_middle>"
