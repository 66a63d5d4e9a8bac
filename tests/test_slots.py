"""Slot choice (pure logic): id_slot, else prompt similarity above the threshold, else an idle
slot next to busy ones, least recently used first."""

from __future__ import annotations

from service.engine.slots import Slot, choose_slot, common_prefix_len


def slots(*caches: list[int], last_used: tuple[float, ...] = ()) -> list[Slot]:
    out = [Slot(i, list(c)) for i, c in enumerate(caches)]
    for s, t in zip(out, last_used, strict=False):
        s.last_used = t
    return out


def test_common_prefix_len() -> None:
    assert common_prefix_len([], [1]) == 0
    assert common_prefix_len([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix_len([1, 2], [1, 2, 3]) == 2
    assert common_prefix_len([5], [6]) == 0
    long = list(range(1000))
    for cut in (0, 63, 64, 65, 500, 999):  # around and across the whole-chunk comparisons
        assert common_prefix_len(long, [*long[:cut], -1, *long[cut + 1:]]) == cut
    assert common_prefix_len(long, [*long, 7]) == 1000


def test_requested_idle_slot_is_taken_even_if_another_matches_better() -> None:
    s = slots([1, 2, 3, 4], [], last_used=(0.0, 5.0))
    assert choose_slot(s, [1, 2, 3, 4, 5], id_slot=1, similarity=0.5) is s[1]


def test_requested_busy_slot_means_wait() -> None:
    s = slots([], [])
    s[0].task = object()
    assert choose_slot(s, [1], id_slot=0, similarity=0.5) is None
    assert choose_slot(s, [1], id_slot=1, similarity=0.5) is s[1]


def test_no_idle_slot_means_wait() -> None:
    s = slots([], [])
    for slot in s:
        slot.task = object()
    assert choose_slot(s, [1], id_slot=-1, similarity=0.5) is None


def test_similarity_above_threshold_picks_the_longest_common_prefix() -> None:
    prompt = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    s = slots([1, 2, 3, 4, 5, 6, 99], [1, 2, 3, 4, 5, 6, 7, 8, 0], [7, 7],
              last_used=(0.0, 9.0, -1.0))
    assert choose_slot(s, prompt, id_slot=-1, similarity=0.5) is s[1]  # 8/10 beats 6/10


def test_similarity_at_or_below_threshold_falls_back_to_least_recently_used() -> None:
    prompt = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    s = slots([1, 2, 3, 4, 5, 0], [9], [], last_used=(5.0, 3.0, 4.0))
    assert choose_slot(s, prompt, id_slot=-1, similarity=0.5) is s[1]  # 5/10 is not > 0.5
    assert choose_slot(s, prompt, id_slot=-1, similarity=0.4) is s[0]


def test_similarity_zero_disables_matching() -> None:
    s = slots([1, 2, 3], [], last_used=(2.0, 1.0))
    assert choose_slot(s, [1, 2, 3], id_slot=-1, similarity=0.0) is s[1]


def test_busy_slots_are_not_candidates_for_similarity() -> None:
    s = slots([1, 2, 3], [4], [], last_used=(0.0, 1.0, 2.0))
    s[0].task = object()
    assert choose_slot(s, [1, 2, 3], id_slot=-1, similarity=0.1) is s[1]


def test_without_a_match_an_idle_slot_next_to_busy_ones_is_preferred() -> None:
    # Busy slots must stay one run of sequence ids: llama.cpp decodes each run separately.
    s = slots(*([[]] * 8), last_used=(7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0, 0.0))
    assert choose_slot(s, [1], id_slot=-1, similarity=0.5) is s[7]  # nothing busy: LRU
    s[3].task = object()
    assert choose_slot(s, [1], id_slot=-1, similarity=0.5) is s[4]  # extends 3 (LRU of 2, 4)
    s[5].task = object()
    assert choose_slot(s, [1], id_slot=-1, similarity=0.5) is s[4]  # joins 3 and 5
    s[4].task = object()
    assert choose_slot(s, [1], id_slot=-1, similarity=0.5) is s[6]  # extends 3-5 (LRU of 2, 6)


def test_a_prompt_match_still_beats_keeping_busy_slots_together() -> None:
    s = slots([], [], [], [5, 6, 7, 8])
    s[0].task = object()
    assert choose_slot(s, [5, 6, 7, 8, 9], id_slot=-1, similarity=0.5) is s[3]


def test_slot_idle_follows_its_task() -> None:
    slot = Slot(0)
    assert slot.idle
    slot.task = object()
    assert not slot.idle
