"""n-gram drafting's lookup (service.engine.speculative.ngram_draft) searches the history as
bytes; its drafts must be exactly those of the plain backward scan it replaced (kept here as
the reference), on histories built to have many matches, matches at the edges of the searched
range, and ids whose bytes match across two neighbouring ids."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest

from service.engine import speculative
from service.engine.speculative import NgramSettings, ngram_draft


def _reference(history: Sequence[int], settings: NgramSettings, k: int) -> list[int]:
    n, total = settings.size_n, len(history)
    if k <= 0 or total <= n + settings.size_m + 2:
        return []
    pattern = list(history[total - n:])
    j = total - n - 2
    while j > 0:
        if history[j] == pattern[0] and list(history[j:j + n]) == pattern:
            break
        j -= 1
    else:
        return []
    follow = list(history[j + n:min(j + n + settings.size_m, total - 1)])
    if len(follow) < n:
        return []
    return follow[:k]


# ids whose little-endian bytes line up with each other's at offsets 1-3
_TRICKY = [1, 256, 65536, 1 << 24, 257, 0, 2, 513, 131072, 16777217]


@pytest.mark.parametrize("first_window", [1, 3, 256])
def test_drafts_equal_the_plain_scans(first_window: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(speculative, "_FIRST_WINDOW", first_window)  # windows of every size
    rng = random.Random(20)
    found = 0
    for _ in range(4000):
        alphabet = rng.choice([_TRICKY, [7, 8], list(range(5)), list(range(100, 140))])
        history = [rng.choice(alphabet) for _ in range(rng.randrange(1, 80))]
        settings = NgramSettings(rng.randrange(1, 5), rng.randrange(1, 10))
        k = rng.randrange(0, 10)
        expected = _reference(history, settings, k)
        assert ngram_draft(history, settings, k) == expected, (history, settings, k)
        found += bool(expected)
    assert found > 500  # most cases above found a draft


def test_a_match_at_either_end_of_the_searched_range() -> None:
    s = NgramSettings(2, 2)
    # j = 1 is the earliest start searched (j = 0 never is), total - n - 2 the latest
    history = [9, 1, 2, 5, 6, 7, 8, 3, 4, 1, 2]
    assert ngram_draft(history, s, 8) == _reference(history, s, 8) == [5, 6]
    history = [1, 2, 9, 9, 9, 9, 9, 1, 2, 0, 1, 2]
    assert ngram_draft(history, s, 8) == _reference(history, s, 8) == [0, 1]
    history = [1, 2, 9, 9, 9, 9, 9, 3, 1, 2]  # only at j = 0: nothing
    assert ngram_draft(history, s, 8) == _reference(history, s, 8) == []


def test_a_long_history_without_a_match() -> None:
    rng = random.Random(3)
    history = rng.sample(range(1000, 200000), 32000)
    s = NgramSettings(3, 8)
    assert ngram_draft(history, s, 8) == _reference(history, s, 8) == []
    for at in (1, 5000, 31000, 31990):  # the last window searched, later ones, the first
        copy = list(history)
        copy[at:at + 3] = copy[-3:]
        expected = copy[at + 3:min(at + 11, len(copy) - 1)]
        assert ngram_draft(copy, s, 8) == _reference(copy, s, 8) == expected
