"""The lazy tool-call grammar (service.engine.lazy_grammar): the trigger matcher on its own
(pure logic), then the watcher with real libllama on the tiny-bpe model (Llama 3's
vocabulary, where `<tool_call>` is four tokens): the tokens of an answer go through a real
sampler chain, the grammar joins it at the trigger, and the model's own continuation, sampled
through that chain, is a call whose arguments are valid for the tool's schema. Text that
already breaks the grammar leaves the answer unconstrained, never crashing."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import native
from native.sampler import Grammar
from service.chat_parse import ChatParseConfig, parse_whole
from service.chat_parse_formats import (
    FIREFUNCTION_V2,
    FUNCTIONARY_V32,
    HERMES,
    LLAMA3,
    LLAMA3_BUILTIN,
)
from service.engine.lazy_grammar import (
    ANCHORED_WINDOW,
    LazyGrammar,
    LazySpec,
    Trigger,
    TriggerMatcher,
)
from service.tool_call_grammar import ToolDef, lazy_triggers, tool_call_grammar

WEATHER = {"type": "object", "properties": {
    "city": {"type": "string", "enum": ["Paris", "Rome"]},
    "days": {"type": "integer", "minimum": 1, "maximum": 9}}, "required": ["city", "days"]}
TOOLS = [ToolDef("get_weather", WEATHER),
         ToolDef("brave_search", {"type": "object", "properties": {
             "query": {"type": "string", "maxLength": 12}}, "required": ["query"]})]


def _feed(matcher: TriggerMatcher, pieces: list[str]) -> int | None:
    for piece in pieces:
        start = matcher.push(piece.encode())
        if start is not None:
            return start
    return None


# -- the matcher ------------------------------------------------------------------------------
def test_word_split_over_pieces() -> None:
    m = TriggerMatcher(lazy_triggers(HERMES, TOOLS))
    pieces = ["Let me", " check", " <", "tool", "_call", ">\n", "{"]
    assert _feed(m, pieces[:-2]) is None and not m.done
    assert _feed(m, pieces[-2:]) == len("Let me check ")
    assert m.done and m.push(b"<tool_call>") is None  # one match per answer


def test_word_inside_one_piece() -> None:
    m = TriggerMatcher(lazy_triggers(FIREFUNCTION_V2, TOOLS))
    assert _feed(m, ["Sure", ". functools[{"]) == len("Sure.")


def test_a_long_answer_only_searches_its_tail() -> None:
    m = TriggerMatcher([Trigger.word("<tool_call>")])
    assert _feed(m, ["word "] * 2000) is None
    assert _feed(m, list("<tool_call>")) == 2000 * len("word ")


def test_llama3_call_must_start_the_answer() -> None:
    m = TriggerMatcher(lazy_triggers(LLAMA3, TOOLS))
    assert _feed(m, ["\n ", ' {"', "name", '":', ' "', "get"]) == 3  # at "{", not the spaces
    m = TriggerMatcher(lazy_triggers(LLAMA3, TOOLS))
    assert _feed(m, ['{"type": "function", "name": "x"']) == 0  # llama.cpp's pattern
    m = TriggerMatcher(lazy_triggers(LLAMA3, TOOLS))
    assert _feed(m, ['Here: {"name": "get_weather"}']) is None
    assert not m.done
    assert _feed(m, ["x" * ANCHORED_WINDOW]) is None
    assert m.done  # no trigger can match any more: the watcher stops


def test_llama31_python_tag_only_with_a_builtin_tool() -> None:
    assert len(lazy_triggers(LLAMA3_BUILTIN, TOOLS)) == 2
    assert len(lazy_triggers(LLAMA3_BUILTIN, TOOLS[:1])) == 1
    code = ToolDef("code_interpreter", {"type": "object", "properties": {"code": {}}})
    assert len(lazy_triggers(LLAMA3_BUILTIN, [*TOOLS, code])) == 1  # plain code: no grammar
    m = TriggerMatcher(lazy_triggers(LLAMA3_BUILTIN, TOOLS))
    assert _feed(m, ["Searching.", "<|python_tag|>", "brave"]) == len("Searching.")


def test_functionary_v32_recipient() -> None:
    triggers = lazy_triggers(FUNCTIONARY_V32, TOOLS)
    assert _feed(TriggerMatcher(triggers), ["get", "_weather\n{"]) == 0
    m = TriggerMatcher(triggers)
    assert _feed(m, ["all", "\n", "Hello", " there"]) is None
    assert _feed(m, [">>>", "get"]) == len("all\nHello there>>>")  # after the marker
    m = TriggerMatcher(triggers)
    assert _feed(m, ["al", "l"]) is None  # still "all"?
    assert _feed(m, ["oc\n"]) == 0  # "alloc": a function after all
    assert _feed(TriggerMatcher(triggers), ["all\n", ">>>all\n", "x"]) is None


def test_thinking_block_is_skipped() -> None:
    think = ("<think>", "</think>")
    m = TriggerMatcher(lazy_triggers(HERMES, TOOLS), think, opened=True)
    text = "I could use <tool_call> here.</think>\n\nOK <tool_call>"
    assert _feed(m, list(text)) == text.rindex("<tool_call>")
    m = TriggerMatcher(lazy_triggers(HERMES, TOOLS), think)
    text = "\n<think>maybe <tool_call>?</think><tool_call>"
    assert _feed(m, [text[:3], text[3:9], text[9:]]) == text.rindex("<tool_call>")
    m = TriggerMatcher(lazy_triggers(LLAMA3, TOOLS), think)
    assert _feed(m, ["<think>", "hmm", "</think>", ' {"name": "']) == len("<think>hmm</think> ")
    # no thinking block: "<" only looked like the start of one
    m = TriggerMatcher(lazy_triggers(HERMES, TOOLS), think)
    assert _feed(m, ["<", "tool_call>"]) == 0


def test_a_match_starts_at_its_first_non_empty_group() -> None:
    m = TriggerMatcher([Trigger(r"x(a?)(b+)")])
    assert _feed(m, ["..xbb"]) == 3


# -- the watcher with libllama ----------------------------------------------------------------
@pytest.fixture(scope="module")
def model(tiny_bpe_path: Path) -> Iterator[native.Model]:
    m = native.Model(tiny_bpe_path)
    yield m
    m.close()


def _answer(model: native.Model, fmt: str, forced: str = "", n: int = 80,
            given: str = "") -> tuple[str, LazyGrammar]:
    """`given` as the answer's given start (a generation_prompt), `forced` as if the model had
    written it (through the chain and the watcher, as Executor.sample does: a token that the
    grammar, once in the chain, would refuse cannot be forced), then up to `n` tokens the model
    samples through the chain (greedy), as the engine does."""
    vocab = model.vocab
    grammar = tool_call_grammar(fmt, TOOLS, parallel=False, lazy=True)
    chain = native.SamplerChain(vocab).top_k(1).dist(1)
    lazy = LazySpec(lazy_triggers(fmt, TOOLS)).start(chain, vocab, grammar, given)
    ctx = native.Context(model, native.ContextParams(n_ctx=512, n_threads=2))
    batch = native.Batch(512)
    prompt = vocab.tokenize("Tools:" + given)
    forced_tokens = vocab.tokenize(forced, add_special=False, parse_special=True)
    idx = batch.add_sequence(prompt + forced_tokens, 0, 0, True)
    for tok in forced_tokens:
        chain.accept(tok)
        lazy.accept(chain, tok)
    out, pos = (given + forced).encode(), len(prompt) + len(forced_tokens)
    try:
        for _ in range(n):
            ctx.decode(batch)
            tok = chain.sample(ctx, idx)
            lazy.accept(chain, tok)
            if vocab.is_eog(tok):
                break
            out += vocab.token_to_piece(tok)
            batch.clear()
            idx, pos = batch.add(tok, pos, 0, True), pos + 1
    finally:
        ctx.close()
        chain.close()
    return out.decode("utf-8", "replace"), lazy


def _check(fmt: str, text: str) -> None:
    msg = parse_whole(ChatParseConfig(fmt), text)
    [call] = msg.tool_calls
    args = json.loads(call.arguments)
    if call.name == "get_weather":
        assert args["city"] in ("Paris", "Rome") and 1 <= args["days"] <= 9
    else:
        assert call.name == "brave_search" and len(args["query"]) <= 12


@pytest.mark.slow  # a grammar over a 128k vocabulary at every token
@pytest.mark.parametrize(("fmt", "forced"), [
    (HERMES, "Sure. <tool_call>\n{"),  # " <" runs across the word's start
    (LLAMA3, ' {"name": "'),  # ' {"' too
    (LLAMA3, '{ "type": "function", "name": "'),
    (LLAMA3_BUILTIN, "<|python_tag|>"),  # six tokens in this vocabulary
    (FUNCTIONARY_V32, "get"),
    (FIREFUNCTION_V2, "Calling. functools["),
])
def test_once_a_call_starts_its_arguments_follow_the_schema(model: native.Model, fmt: str,
                                                             forced: str) -> None:
    text, lazy = _answer(model, fmt, forced)
    assert lazy.state == "constrained"
    _check(fmt, text)


@pytest.mark.slow
def test_a_call_written_before_the_trigger_completes_is_checked(model: native.Model) -> None:
    # the trigger completes inside a token that goes on with the call's text
    text, lazy = _answer(model, HERMES, '<tool_call>\n{"name": "get_weather", "arguments": {')
    assert lazy.state == "constrained"
    _check(HERMES, text)


# Generated text breaks the grammar already only in the token that completes the trigger (the
# grammar constrains every later one); given text can break it anywhere.
@pytest.mark.parametrize(("fmt", "forced", "given"), [
    (HERMES, "<tool_call>{$", ""),  # the format wants a newline first; ">{" runs past the word
    (FUNCTIONARY_V32, "xyz", ""),
    (HERMES, "", '<tool_call>\n{"name": "get_news"'),  # not a tool of the request
    (LLAMA3, "", '{"name": "get_weather", "parameters": {"city": "Oslo"'),  # off the enum
])
def test_text_that_already_breaks_the_grammar_stays_unconstrained(
        model: native.Model, fmt: str, forced: str, given: str,
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("DEBUG", logger="service.engine.lazy_grammar"):
        text, lazy = _answer(model, fmt, forced, n=20, given=given)
    assert lazy.state == "unconstrained" and text.startswith(given + forced)
    assert any("not applied" in r.getMessage() for r in caplog.records)


def test_the_grammar_joins_after_the_logit_bias(model: native.Model) -> None:
    vocab = model.vocab
    chain = native.SamplerChain(vocab).logit_bias({5: 1.0}).top_k(1).dist(1)
    chain.preselect_top_k(1, [5])
    spec = LazySpec((Trigger.word("<tool_call>"),))
    lazy = spec.start(chain, vocab, tool_call_grammar(HERMES, TOOLS, parallel=False),
                      "OK <tool_call>\n")
    assert lazy.state == "constrained"  # the given start of the answer holds the trigger
    assert chain.names == ["logit_bias", "grammar", "top_k", "dist"] and len(chain) == 4
    assert chain._preselect_k == 0
    chain.close()


def test_grammar_sampler_refuses_without_accepting(model: native.Model) -> None:
    vocab = model.vocab
    g = Grammar(vocab, 'root ::= "ab"')
    [b] = vocab.tokenize("b", add_special=False)
    [a] = vocab.tokenize("a", add_special=False)
    eog = vocab.eot if vocab.eot >= 0 else vocab.eos
    assert not g.allows(b) and not g.accept(b) and not g.allows(eog)
    assert g.accept(a) and g.accept(b) and g.allows(eog)
    g.close()
    with pytest.raises(native.SamplerError):
        Grammar(vocab, "root ::= (")


def test_patterns_are_valid_regexes() -> None:
    for fmt in (HERMES, LLAMA3, LLAMA3_BUILTIN, FUNCTIONARY_V32, FIREFUNCTION_V2):
        for trigger in lazy_triggers(fmt, TOOLS):
            re.compile(trigger.pattern.encode())


def test_any_bytes_are_spelled_by_tokens(model: native.Model) -> None:
    from service.engine.lazy_grammar import _tokens_for
    vocab = model.vocab
    for text in (b' {"', b"\xe6\x97", "旗".encode()[1:], b"<|python_tag|>x"):
        tokens = _tokens_for(vocab, text)
        assert tokens is not None
        assert b"".join(vocab.token_to_piece(t) for t in tokens) == text
