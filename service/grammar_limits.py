"""Limits a GBNF grammar must meet before libllama parses it (issue 15).

libllama's grammar code (src/llama-grammar.cpp in the pinned llama.cpp) has no limits of its
own, and the engine thread parses every request's grammar, so one request could take the whole
server down:

- its recursive-descent parser recurses once per nested group `( ... )` (parse_sequence ->
  parse_alternates), 448 bytes of native stack a level: 60,000 groups overflow any default
  stack (SIGSEGV; llama.cpp issue #26600);
- its left-recursion check (llama_grammar_detect_left_recursion) recurses along each rule's
  leftmost rule references, 128 bytes a step, and every group and repetition is a rule of its
  own: a chain `a ::= b`, `b ::= c`, ... of 65,500 rules overflows an 8 MiB stack, and so do 70
  rules of 1,000 nested groups each (141 KB), which no nesting limit alone catches;
- a repetition `x{m,n}` with n < m makes the parser generate rules without end (n - m wraps
  around as an unsigned number) until memory runs out: `root ::= "a"{3,1}` took 830 MB in 10 s;
- repetitions copy their symbol (`"..."{2000}` holds 2,000 copies), so memory follows the
  expanded size, not the text's.

`check_grammar` reads the text once, modelling the rules libllama builds from it (groups and
repetitions become rules as in parse_sequence), and refuses a grammar beyond any limit below
with GrammarLimitError (a ValueError: INVALID_ARGUMENT, HTTP 400) naming the limit and the value
found. The model need only be exact for grammars libllama parses: the left-recursion check runs
only on those, and the nesting is counted on the bare text whatever the model makes of it.

Not bounded here: time. libllama's left-recursion check does not remember the rules it has
cleared, so rules that each reach the next twice through symbols that may be empty (`a1 ::= |
a2 a2`, `a2 ::= | a3 a3`, ...) cost 2^n steps (24 such rules: 0.44 s, each one more doubles
it). And libllama enumerates every way a grammar can begin (and go on, after every token):
optional symbols in a row cost the square of their number (`"a"? "a"? ...`: 100 KB took 0.77 s
to parse, 300 KB 7.5 s, 1 MiB 96 s), nested ambiguity far more (`e ::= | f{0,100}`, `f ::= |
g{0,100}`, `g ::= | "x"`: 70 bytes, over a minute).
"""

from __future__ import annotations

import re

from service import limits

# Measured with the pinned libllama on x86-64, parsing on a Python threading.Thread (whose
# stack is RLIMIT_STACK's size: 8 MiB here, 2 MiB when the limit is unlimited, unless
# threading.stack_size() says otherwise): nested groups overflowed at 18,700 on an 8 MiB stack,
# 4,668 on 2 MiB and 2,322 on 1 MiB (448 bytes a level; the main thread's 8 MiB alike), and a
# leftmost rule chain at 65,500 rules on 8 MiB and 8,140 on 1 MiB (128 bytes a step). The
# limits below take under 0.5 MiB of stack each (the two recursions run one after the other),
# so a grammar within them parses even on a 1 MiB thread stack, with room left for the frames
# beneath the parser.

MAX_GRAMMAR_BYTES = 1 << 20
"""UTF-8 size. Our JSON-schema converter writes about 2.5 bytes of grammar per byte of schema
(a 237 KB schema of 5,300 rules gives 604 KB); hand-written grammars are a few KB. llama-server
has no limit; this one keeps check_grammar (0.2 s for 1 MiB) and libllama's parse short."""

MAX_NESTING_DEPTH = 1_000
"""Groups `( ... )` open at once: 448 KB of parser stack. Real grammars nest fewer than ten
(llama.cpp's grammars/ and its converter's tests: 4 at most); a declared property name of n
characters nests n groups in our grammar for the other keys of its object (n <= 500, see
json_schema_containers)."""

MAX_RULE_CHAIN = 4_000
"""Rules libllama's left-recursion check can be inside at once: a path of rules each reached
from the previous one through the leftmost symbols of an alternative (past rule references
that may be empty): 512 KB of stack. Nested groups make such a path, and so do named rules
`a ::= b`; real grammars have at most 7."""

MAX_ELEMENTS = 4_000_000
"""Grammar elements (characters of literals, items of classes, rule references, ends of
alternatives) with repetitions copied out: libllama held 3.98 million in 82 MB more memory
(about 21 bytes each at peak) and parsed them in 0.1 s. A 1 MiB grammar has at most a million
before repetitions; our converter's 604 KB grammar has 0.77 million."""

MAX_REPETITION = 2_000  # llama.cpp's MAX_REPETITION_THRESHOLD
_MAX_COUNT_DIGITS = 9  # a longer {m,n} count is over MAX_REPETITION anyway; int() stays cheap
_SPACE = r"(?:[ \t\r\n]|\#[^\r\n]*)*"
# One token, after blanks; most frequent first. As llama.cpp reads them: a backslash escapes
# the next character in literals and classes, a token <...> ends at the first >.
_TOKEN = re.compile(rf"""[ \t]*(?:
    (?P<op>[()|*+?.])
  | (?P<name>[A-Za-z0-9-]+)
  | "(?P<literal>(?:[^"\\]|\\[\s\S])*)"?
  | (?P<nl>\r\n?|\n)
  | \[\^?(?P<cls>(?:[^\]\\]|\\[\s\S])*)\]?
  | (?P<define>::=)
  | (?P<braces>\{{{_SPACE}(?P<lo>\d+){_SPACE}(?:(?P<comma>,){_SPACE}(?P<hi>\d*){_SPACE})?\}})
  | (?P<token>!?<[^>]*>?)
  | (?P<comment>\#[^\r\n]*)
  | (?P<other>[\s\S])
)""", re.VERBOSE)
_OPERATORS = {"*": (0, None), "+": (1, None), "?": (0, 1)}


class GrammarLimitError(ValueError):
    """A grammar exceeds a documented size or nesting limit (INVALID_ARGUMENT / HTTP 400)."""


def check_grammar(text: str) -> None:
    """Raise GrammarLimitError if `text` is too large or nests too deeply to parse safely.

    One pass over the text, then one over the rules: about 21 ms for a 100 KB grammar from our
    JSON-schema converter (0.2 us a byte, timeit on the 2-core development machine), 0.35 ms
    for llama.cpp's 1.4 KB grammars/c.gbnf. The most rules a byte can make cost more: 200,000
    `*` in a row take 1.4 s to refuse (7 us each).
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    max_bytes = min(MAX_GRAMMAR_BYTES, limits.current().max_grammar_bytes)
    if size > max_bytes:
        raise GrammarLimitError(f"grammar is {size} bytes; the limit is {max_bytes}")
    model = _RuleModel()
    model.read(text)
    max_depth = min(MAX_NESTING_DEPTH, limits.current().max_grammar_depth)
    if model.max_depth > max_depth:
        raise GrammarLimitError(f"grammar nests groups ( ... ) {model.max_depth} deep; the "
                                f"limit is {max_depth}")
    chain = model.longest_left_chain()
    if chain > MAX_RULE_CHAIN:
        raise GrammarLimitError(
            f"grammar chains {chain} rules through their first symbols (each group and "
            f"repetition is a rule of its own); the limit is {MAX_RULE_CHAIN}")


class _Frame:
    """A rule or group being read, with parse_sequence's state for its current alternative."""

    __slots__ = ("alt", "alts", "before", "last", "n_prev", "rule")

    def __init__(self, rule: int, before: int = 0) -> None:
        self.rule = rule
        self.before = before  # symbols that existed when the group opened
        self.alt: list[int] = []  # an element: a rule id, or -n for n terminal elements
        self.alts = [self.alt]
        self.last: int | None = None  # where the last symbol starts in alt (last_sym_start)
        self.n_prev = 1  # rules the last symbol stands for (n_prev_rules)


class _RuleModel:
    """The rules libllama's parser builds from a grammar (llama_grammar_parser::parse_sequence),
    read in one pass; and the deepest nesting of ( ... )."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.n_symbols = 0  # libllama's symbol_ids.size(): names, groups, repetition rules
        # rule id -> (alternatives, chain): a bounded repetition's n - m rules
        # S'(k) ::= S S'(k-1) | , S'(1) ::= S | are kept as one rule with chain n - m.
        self.rules: dict[int, tuple[list[list[int]], int]] = {}
        self.frames: list[_Frame] = []  # the rule being defined, then its open groups
        self.elements = 0
        # Counted on every ( and ) outside literals, classes, tokens and comments: the
        # parser's recursion, whether or not it goes on to refuse the grammar. Past the limit
        # only the counting goes on.
        self.depth = self.max_depth = 0

    def read(self, text: str) -> None:
        newline_ok = True  # at the top level a newline ends a rule, except after ::= and |
        for m in _TOKEN.finditer(text):
            kind = m.lastgroup
            if kind == "op":
                self.op(m.group(kind))
            elif kind == "comment":
                continue  # a comment leaves newline_ok as it was
            elif kind == "nl":
                if not newline_ok and len(self.frames) == 1:
                    self.close()
                continue
            elif not self.frames:
                if kind == "name" and self.max_depth <= MAX_NESTING_DEPTH:
                    self.frames.append(_Frame(self.symbol_id(m.group(kind))))
                # anything else where a rule name belongs: libllama refuses the grammar
            elif kind == "name":
                self.symbol([self.symbol_id(m.group(kind))], 1)
            elif kind == "literal" or kind == "cls":
                inner = m.group(kind)  # at most one element per character
                self.symbol([-len(inner)] if inner else [], len(inner))  # "" adds none
            elif kind == "token":
                self.symbol([-1], 1)
            elif kind == "braces":
                self.braces(m.group("lo"), m.group("comma"), m.group("hi"))
            newline_ok = kind == "define" or (kind == "op" and m.group(kind) == "|")
        while self.frames:
            self.close()

    def op(self, c: str) -> None:
        if c == "(":
            self.depth += 1
            if self.depth > self.max_depth:
                self.max_depth = self.depth
                if self.depth > MAX_NESTING_DEPTH:
                    self.frames.clear()  # refused: only the depth matters now
            if self.frames:
                before = self.n_symbols
                self.frames.append(_Frame(self.new_symbol(), before))
        elif c == ")":
            self.depth = max(self.depth - 1, 0)
            if len(self.frames) > 1:
                self.close()
        elif not self.frames:
            return
        elif c == "|":
            frame = self.frames[-1]
            frame.alt, frame.last = [], None
            frame.alts.append(frame.alt)
        elif c == ".":
            self.symbol([-1], 1)
        else:
            self.repeat(*_OPERATORS[c])

    def braces(self, lo_digits: str, comma: str | None, hi_digits: str | None) -> None:
        lo = _count(lo_digits)
        hi = lo if comma is None else _count(hi_digits) if hi_digits else None
        if hi is not None and hi < lo:
            # libllama computes n - m unsigned and generates rules until memory runs out
            raise GrammarLimitError(f"grammar repeats {{{lo},{hi}}}: the maximum is below "
                                    "the minimum")
        if lo <= MAX_REPETITION:  # else libllama refuses it; a larger maximum is unbounded
            self.repeat(lo, None if hi is not None and hi > MAX_REPETITION else hi)

    # -- rules ----------------------------------------------------------------------------------
    def symbol_id(self, name: str) -> int:
        if name not in self.ids:
            self.ids[name] = self.new_symbol()
        return self.ids[name]

    def new_symbol(self, n: int = 1) -> int:
        self.n_symbols += n
        return self.n_symbols - 1

    def grow(self, n: int) -> None:
        self.elements += n
        if self.elements > MAX_ELEMENTS:
            raise GrammarLimitError(
                f"grammar expands to over {MAX_ELEMENTS} elements (characters, rule references "
                f"and alternatives, repetitions copied out); the limit is {MAX_ELEMENTS}")

    def symbol(self, elements: list[int], weight: int) -> None:
        frame = self.frames[-1]
        frame.last, frame.n_prev = len(frame.alt), 1
        self.grow(weight)
        frame.alt.extend(elements)

    def close(self) -> None:
        """The innermost open rule or group is complete: define it (a later definition of a
        name replaces an earlier one, as in libllama)."""
        frame = self.frames.pop()
        old = self.rules.get(frame.rule)
        self.grow(len(frame.alts) - (_size(old[0]) if old else 0))  # an end marker each
        self.rules[frame.rule] = (frame.alts, 1)
        if self.frames:  # a group: a reference to its rule is the parent's last symbol
            self.symbol([frame.rule], 1)
            self.frames[-1].n_prev = max(1, self.n_symbols - frame.before)

    def repeat(self, lo: int, hi: int | None) -> None:
        """libllama's handle_repetitions: S{m,n} -> S (m times) S'(n-m); S'(k) ::= S S'(k-1) | ,
        S'(1) ::= S | ; unbounded: S' ::= S S' | ."""
        frame = self.frames[-1]
        alt, start = frame.alt, frame.last
        if start is None or start == len(alt):
            return  # nothing to repeat: libllama refuses the grammar
        total = hi if hi else lo or 1
        if frame.n_prev * total > MAX_REPETITION:
            return  # libllama refuses it ("exceeds sane defaults")
        prev = alt[start:]
        weight = _weight(prev)
        self.grow(weight * (lo - 1))
        if lo == 0:
            del alt[start:]
        else:
            alt.extend(prev * (lo - 1))
        n_opt = 1 if hi is None else hi - lo
        if n_opt:
            rule = self.new_symbol(n_opt)  # the ids of S'(1) .. S'(n-m)
            self.grow(n_opt * (weight + 3) + 1)  # S, a reference, two markers; the reference
            self.rules[rule] = ([[*prev, rule] if hi is None else prev, []], n_opt)
            alt.append(rule)  # last_sym_start stays: the repeated symbol now ends here
        frame.n_prev *= total

    # -- the left-recursion check's depth ---------------------------------------------------------
    def longest_left_chain(self) -> int:
        """How deep llama_grammar_detect_left_recursion can recurse: the most rules on a path
        where each is reached from the one before through the leftmost symbols of one of its
        alternatives (going past rule references that may be empty, i.e. that have an empty
        alternative). libllama refuses a grammar with a cycle here (left recursion), but only
        once it finds it: a path inside a cycle is bounded by the rules that form it.
        """
        empty = {r for r, (alts, _) in self.rules.items() if [] in alts}
        edges: dict[int, list[int]] = {}
        weight: dict[int, int] = {}
        for r, (alts, chain) in self.rules.items():
            out = []
            for alt in alts:
                for e in alt:
                    if e < 0:
                        break
                    out.append(e)
                    if e not in empty:
                        break
            if out:
                edges[r] = out
            if chain > 1 and all(e >= 0 and e in empty for e in alts[0]):
                weight[r] = chain  # S'(k) reaches S'(k-1) past S
        return max(_longest_path(edges, weight), 1 if self.rules else 0)


def _weight(elements: list[int]) -> int:
    return sum(1 if e >= 0 else -e for e in elements)


def _size(alts: list[list[int]]) -> int:
    return sum(map(_weight, alts)) + len(alts)


def _count(digits: str) -> int:
    return int(digits) if len(digits) <= _MAX_COUNT_DIGITS else MAX_REPETITION + 1


def _longest_path(edges: dict[int, list[int]], weight: dict[int, int]) -> int:
    """The heaviest path in a directed graph (nodes weigh 1 unless `weight` says otherwise;
    nodes without edges out need not be in `edges`), a strongly connected component weighing
    all its nodes together. Iterative Tarjan: the components come out sinks first, so each
    one's successors are known by then."""
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    stack: list[int] = []
    on_stack: set[int] = set()
    best: dict[int, int] = {}  # node with edges out -> heaviest path from it

    def from_succ(s: int) -> int:  # 0 for a node of the component being closed
        return best.get(s, 0) if s in edges else weight.get(s, 1)

    for root in edges:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, succs = work[-1]
            for succ in succs:
                if succ not in edges:
                    continue
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(edges[succ])))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    members: list[int] = []
                    while not members or members[-1] != node:
                        members.append(stack.pop())
                        on_stack.discard(members[-1])
                    below = max(from_succ(s) for m in members for s in edges[m])
                    total = below + sum(weight.get(m, 1) for m in members)
                    best.update(dict.fromkeys(members, total))
    return max(best.values(), default=0)
