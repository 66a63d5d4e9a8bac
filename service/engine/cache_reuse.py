"""Cache reuse by KV shifting (`n_cache_reuse`, `--cache-reuse`): pure logic.

After the common prefix of a slot's cached tokens and a new prompt, llama-server looks for
further runs of the prompt in the cache, in order: the cache is scanned forward, and wherever
at least `min_chunk` tokens in a row equal the prompt's next ones, those cells are moved to
the prompt's positions (llama_memory_seq_rm of the gap, then llama_memory_seq_add to shift the
run) instead of being computed again. A prompt that drops a middle part of an earlier one
(an edited conversation) so keeps what follows it. This computes the moves; the executor
carries them out in order, and the slot's cached tokens become the prompt's first `n_past`.
"""

from __future__ import annotations

from collections.abc import Sequence

Shift = tuple[int, int, int]  # (prompt position, cache position, length) of a moved run


def reuse_chunks(cache: Sequence[int], prompt: Sequence[int], n_past: int,
                 min_chunk: int) -> tuple[tuple[Shift, ...], int]:
    """The runs to move and the tokens reused in all, from `n_past` (the common prefix).

    Moves are in order: each removes the cells between its prompt and cache positions, then
    shifts its run back onto the prompt's positions. The last prompt token is never reused
    (its logits must be computed).
    """
    if min_chunk <= 0:
        return (), n_past
    end_p = len(prompt) - 1
    head_c = head_p = n_past
    shifts: list[Shift] = []
    while head_c < len(cache) and head_p < end_p:
        n = 0
        while (head_c + n < len(cache) and head_p + n < end_p
               and cache[head_c + n] == prompt[head_p + n]):
            n += 1
        if n >= min_chunk:
            shifts.append((head_p, head_c, n))
            head_c += n
            head_p += n
        else:
            head_c += 1
    return tuple(shifts), head_p
