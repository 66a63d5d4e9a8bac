"""A grammar that constrains a chat answer only once a tool call starts (tool_choice "auto"),
triggered by us rather than by libllama.

libllama's lazy grammar (llama_sampler_init_grammar_lazy_patterns) replays the token that
completed a trigger pattern into the grammar; when that token runs past the trigger with text
the grammar refuses (`{$`), libllama throws a C++ exception through its C API, which ends the
process. So the answer is generated unconstrained while a TriggerMatcher watches its text for
the format's trigger patterns (those llama.cpp uses per format, service.tool_call_grammar);
on a match, a non-lazy grammar sampler (made, and its grammar parsed, when the request was
prepared) is fed the text from the match's start, every token checked against the grammar
before it is accepted, and then joins the request's sampler chain, constraining every later
token. Text that already breaks the grammar ends the constraint for that request (a debug log
says so): the answer goes on unconstrained, and the server never crashes.
"""

from __future__ import annotations

import logging
import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from native import LlamaError, SamplerChain, Vocab
from native.sampler import Grammar

_log = logging.getLogger(__name__)

# How far back a trigger match may begin before the newest piece: trigger words and patterns
# are short, and searching only the tail keeps each token's check constant.
MAX_MATCH = 64
# An anchored trigger (a call only at the answer's start: Llama 3.x's bare JSON) is looked for
# in this many first bytes of the answer, then no more.
ANCHORED_WINDOW = 256


@dataclass(frozen=True)
class Trigger:
    """A regex over the answer's text (UTF-8 bytes). A match's start is that of its first
    non-empty group, else its own (as llama.cpp's trigger patterns); `anchored`: it matches only
    at the start of the answer (after any thinking block)."""

    pattern: str
    anchored: bool = False

    @staticmethod
    def word(word: str) -> Trigger:
        return Trigger(re.escape(word))


class TriggerMatcher:
    """Watches an answer's text, piece by piece, for the first trigger match; skips a thinking
    block at the answer's start (`think`: its start and end tags; `opened`: the prompt opened
    it)."""

    def __init__(self, triggers: Sequence[Trigger], think: tuple[str, str] | None = None,
                 opened: bool = False) -> None:
        self._search = [re.compile(t.pattern.encode()) for t in triggers if not t.anchored]
        self._anchored = [re.compile(t.pattern.encode()) for t in triggers if t.anchored]
        self._think = (think[0].encode(), think[1].encode()) if think else None
        self.text = bytearray()
        self._from = 0  # where the answer proper begins (after a thinking block)
        self._thinking = opened and self._think is not None
        self.done = False  # matched, or no trigger can match any more

    def push(self, piece: bytes) -> int | None:
        """Add the next piece; the offset in `text` where a call starts, on the first match
        (the matcher is done then), else None."""
        if self.done:
            return None
        old = len(self.text)
        self.text += piece
        if not self._past_thinking(old):
            return None
        start = self._match(old)
        if start is not None or (not self._search and not self._anchoring()):
            self.done = True
        return start

    def earliest(self) -> int:
        """The smallest offset at which a later match could still start."""
        if self._anchoring():
            return self._from
        return max(self._from, len(self.text) - MAX_MATCH)

    def _anchoring(self) -> bool:
        return bool(self._anchored) and len(self.text) - self._from <= ANCHORED_WINDOW

    def _past_thinking(self, old: int) -> bool:
        """Whether the answer proper has begun (moving `_from` past a thinking block)."""
        if self._think is None:
            return True
        open_tag, close_tag = self._think
        if not self._thinking and old < len(open_tag) + MAX_MATCH:
            head = bytes(self.text).lstrip()
            if head and open_tag.startswith(head[:len(open_tag)]):
                if len(head) < len(open_tag):
                    return False  # could still be the start tag
                self._thinking = True
        if self._thinking:
            end = self.text.find(close_tag, max(self._from, old - len(close_tag)))
            if end < 0:
                return False
            self._thinking, self._from = False, end + len(close_tag)
            self._think = None  # one block, at the start
        return True

    def _match(self, old: int) -> int | None:
        if self._anchoring():
            for regex in self._anchored:
                m = regex.match(self.text, self._from)
                if m:
                    return _start_of(m)
        pos = max(self._from, old - MAX_MATCH)
        for regex in self._search:
            m = regex.search(self.text, pos)
            if m:
                return _start_of(m)
        return None


def _start_of(m: re.Match[bytes]) -> int:
    for i in range(1, (m.re.groups or 0) + 1):
        if m.start(i) >= 0 and m.end(i) > m.start(i):
            return m.start(i)
    return m.start()


@dataclass(frozen=True)
class LazySpec:
    """What a chat request's lazy grammar needs besides the grammar text: the format's
    triggers, and its thinking tags when a thinking block is parsed apart."""

    triggers: tuple[Trigger, ...]
    think: tuple[str, str] | None = None

    def start(self, chain: SamplerChain, vocab: Vocab, grammar: str, prefix: str = "",
              opened: bool = False) -> LazyGrammar:
        """The watcher for one task's answer, whose given start is `prefix` (the answer's
        parse prefix: generation_prompt, a prefilled message) after a prompt that `opened` a
        thinking block; parses the grammar now (off the engine thread; SamplerError if
        libllama refuses it)."""
        return LazyGrammar(chain, vocab, Grammar(vocab, grammar), self, prefix, opened)


class LazyGrammar:
    """One task's watcher: accept() after every sampled token (Executor.sample)."""

    def __init__(self, chain: SamplerChain, vocab: Vocab, grammar: Grammar, spec: LazySpec,
                 prefix: str = "", opened: bool = False) -> None:
        self.vocab = vocab
        self._grammar: Grammar | None = grammar
        self._matcher = TriggerMatcher(spec.triggers, spec.think, opened)
        # (token, its span in the matcher's text); a token of None: given text, no token
        self._spans: list[tuple[int | None, int, int]] = []
        self.state = "watching"  # then "constrained" or "unconstrained"
        if prefix:
            self._push(chain, None, prefix.encode())

    @property
    def done(self) -> bool:
        return self.state != "watching"

    def accept(self, chain: SamplerChain, token: int) -> None:
        """The task's chain just took `token`."""
        if self.state != "watching" or self.vocab.is_eog(token):
            return
        self._push(chain, token, self.vocab.token_to_piece(token, special=True))

    def close(self) -> None:
        if self._grammar is not None:
            self._grammar.close()
            self._grammar = None

    def _push(self, chain: SamplerChain, token: int | None, piece: bytes) -> None:
        begin = len(self._matcher.text)
        self._spans.append((token, begin, begin + len(piece)))
        start = self._matcher.push(piece)
        if start is not None:
            self._engage(chain, start)
        elif self._matcher.done:
            self._give_up("no trigger can match any more (a call only starts the answer)")
        elif len(self._spans) > 2 * MAX_MATCH:  # keep the tokens a match could still cover
            earliest = self._matcher.earliest()
            self._spans = [s for s in self._spans if s[2] > earliest]

    def _engage(self, chain: SamplerChain, start: int) -> None:
        grammar = self._grammar
        assert grammar is not None
        text = bytes(self._matcher.text)
        for token, begin, end in self._spans:
            if end <= start:
                continue
            tokens = [token] if token is not None and begin >= start else _tokens_for(
                self.vocab, text[max(begin, start):end])
            if tokens is None:
                self._give_up(f"no tokens spell {text[max(begin, start):end]!r}")
                return
            for tok in tokens:
                if not grammar.accept(tok):
                    self._give_up(f"the grammar refuses the call's text {text[start:]!r}")
                    return
        index = 1 if chain.names[:1] == ["logit_bias"] else 0  # llama-server's order
        chain.insert_grammar(grammar, index)
        self._grammar, self.state, self._spans = None, "constrained", []
        _log.debug("tool call started (%r): its grammar constrains the rest", text[start:])

    def _give_up(self, why: str) -> None:
        _log.debug("lazy tool-call grammar not applied: %s", why)
        self.state, self._spans = "unconstrained", []
        self.close()


# per vocabulary: byte -> a token whose piece is that byte (-1 -> 1: the vocabulary was scanned)
_BYTE_TOKENS: weakref.WeakKeyDictionary[Vocab, dict[int, int]] = weakref.WeakKeyDictionary()


def _tokens_for(vocab: Vocab, text: bytes) -> list[int] | None:
    """Tokens whose pieces spell exactly `text` (for the part of a token after a match's
    start, or given text): the tokenizer's, when they do, else one token per byte; None if the
    vocabulary lacks one."""
    tokens = _tokenize(vocab, text)
    if b"".join(vocab.token_to_piece(t) for t in tokens) == text:
        return tokens
    byte_tokens = _BYTE_TOKENS.setdefault(vocab, {})
    out = []
    for b in text:
        if b not in byte_tokens:
            _find_byte_token(vocab, b, byte_tokens)
        tok = byte_tokens.get(b)
        if tok is None:
            return None
        out.append(tok)
    return out


def _tokenize(vocab: Vocab, text: bytes) -> list[int]:
    try:
        return vocab.tokenize(text, add_special=False, parse_special=False)
    except (LlamaError, ValueError):  # e.g. bytes that are not UTF-8: spelled byte by byte
        return []


def _find_byte_token(vocab: Vocab, b: int, found: dict[int, int]) -> None:
    """The token whose piece is the byte `b`: the tokenizer's guess first, else one pass over
    the vocabulary (~1 s for 128k tokens, once per vocabulary) that records every byte."""
    one = bytes([b])
    for tok in _tokenize(vocab, one):
        if vocab.token_to_piece(tok) == one:
            found[b] = tok
            return
    if found.get(-1):  # scanned already
        return
    for tok in range(vocab.n_tokens):
        piece = vocab.token_to_piece(tok)
        if len(piece) == 1:
            found.setdefault(piece[0], tok)
    found[-1] = 1
