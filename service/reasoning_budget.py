"""The thinking budget of a chat answer (`--reasoning-budget N`, `--reasoning-budget-message`,
the request's `reasoning_control`), as the pinned llama.cpp's reasoning-budget sampler
(common/reasoning-budget.cpp) behaves; our own code.

Counting starts at the thinking block's start tag (`<think>`; at once when the template's
prompt opened the block). After N tokens inside the block (and once the last one completes a
UTF-8 character), the engine forces the budget message and the end tag, token by token, in
place of sampling; then the answer goes on as content. A natural end tag ends the count; a
later start tag starts a fresh budget. `reasoning_control` arms the same machine with no
budget, so that ControlChatCompletion (`reasoning_end`) can end the block at run time.

The state lives on the engine thread; `request_end` is the one call from another thread (it
sets a flag that the engine reads on its next step).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

IDLE, COUNTING, WAITING_UTF8, FORCING, DONE = range(5)


@dataclass(frozen=True)
class BudgetSpec:
    """What a request's budget machine starts from (built once per request)."""

    start: tuple[int, ...]  # the start tag's tokens
    end: tuple[int, ...]  # the end tag's tokens
    forced: tuple[int, ...]  # message + end tag, forced when the budget runs out
    budget: int  # tokens of thinking; sys.maxsize: none (reasoning_control alone)
    opened: bool  # the prompt opened the block: the answer starts inside it
    piece: Callable[[int], bytes]  # a token's bytes (UTF-8 completeness)
    control: bool = False  # reasoning_control: the block may be ended at run time

    def state(self) -> BudgetState:
        return BudgetState(self)


def budget_spec(tokenize: Callable[[str], Sequence[int]], piece: Callable[[int], bytes],
                tags: tuple[str, str], opened: bool, budget: int, message: str | None,
                control: bool) -> BudgetSpec | None:
    """The spec for a chat whose thinking block has `tags`, or None when nothing limits it
    (budget -1 and no reasoning_control) or the tags do not tokenize."""
    if budget < 0 and not control:
        return None
    start, end = tuple(tokenize(tags[0])), tuple(tokenize(tags[1]))
    if not start or not end:
        return None
    forced = tuple(tokenize(message)) + end if message else end
    return BudgetSpec(start, end, forced, budget if budget >= 0 else sys.maxsize, opened,
                      piece, control)


class BudgetState:
    """One answer's budget machine: `forced()` before sampling, `accept(token)` after."""

    def __init__(self, spec: BudgetSpec) -> None:
        self.spec = spec
        self.state, self.remaining, self.pos = IDLE, spec.budget, 0
        self.recent: list[int] = []  # the last tokens, to find a tag's sequence
        self.end_wanted = False  # set by request_end, from any thread
        if spec.opened:
            self._begin()

    def _begin(self) -> None:
        self.state, self.remaining, self.recent = COUNTING, self.spec.budget, []
        if self.remaining <= 0:
            self.state, self.pos = FORCING, 0

    def request_end(self) -> None:
        """End the thinking block as soon as the engine can (reasoning_control)."""
        self.end_wanted = True

    def forced(self) -> int | None:
        """The token the answer must take next, or None to sample."""
        if self.end_wanted:
            self.end_wanted = False
            if self.state == COUNTING:  # llama.cpp's force: only a block being counted
                self.state, self.pos = FORCING, 0
        if self.state != FORCING or self.pos >= len(self.spec.forced):
            return None
        return self.spec.forced[self.pos]

    def accept(self, token: int) -> None:
        """The answer took `token` (sampled or forced)."""
        state = self.state
        if state in (IDLE, DONE):
            if self._matched(token, self.spec.start):
                self._begin()
        elif state == FORCING:
            self.pos += 1
            if self.pos >= len(self.spec.forced):
                self.state, self.recent = DONE, []
        elif self._matched(token, self.spec.end):
            self.state, self.recent = DONE, []
        else:
            complete = _utf8_complete(self.spec.piece(token))
            if state == COUNTING:
                self.remaining -= 1
                if self.remaining <= 0:
                    self.state = FORCING if complete else WAITING_UTF8
                    self.pos = 0
            elif complete:  # WAITING_UTF8
                self.state, self.pos = FORCING, 0

    def _matched(self, token: int, seq: tuple[int, ...]) -> bool:
        self.recent.append(token)
        if len(self.recent) > len(seq):
            del self.recent[:-len(seq)]
        if tuple(self.recent) == seq:
            self.recent = []
            return True
        return False


def _utf8_complete(data: bytes) -> bool:
    """Whether a token's piece ends on a whole UTF-8 character, judged on the piece alone as
    llama.cpp judges it (a piece of continuation bytes only is not)."""
    if not data:
        return True
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:
            need = 4 if byte >= 0xF0 else 3 if byte >= 0xE0 else 2 if byte >= 0xC0 else 1
            return back >= need
    return False
