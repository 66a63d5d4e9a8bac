"""`python -m bench.soak_server ARGS`: the server (service.cli's main, same arguments) with
every loaded vocabulary's token-piece caches filled, for every token id and both `special`
flags, as the model loads, before the server answers anything. bench/soak.py runs it for
--warm-piece-cache, so that the soak's growth figures leave out the caches (bounded by the
vocabulary: n_vocab x ~112 B a flag, docs/reliability.md "Soak figures"), which a tiny random
model would otherwise fill slowly over the whole soak.

It fills the caches the server itself uses (through Vocab.token_to_piece, the same path
requests take) and changes nothing else: the piece bytes are the ones any request would have
cached. The fill is reported on stderr (into the soak's server.log)."""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import Any

from native import vocab
from service import cli


def fill_pieces(v: vocab.Vocab) -> int:
    """Cache the piece of every token id for both `special` flags; how many entries now."""
    for special in (False, True):
        for token in range(v.n_tokens):
            v.token_to_piece(token, special=special)
    return sum(len(cache) for cache in v._pieces)


def install() -> None:
    """Make every Vocab made from now on fill its piece caches when it is made."""
    original = vocab.Vocab.__init__

    def init(self: vocab.Vocab, ptr: Any, owner: object) -> None:
        original(self, ptr, owner)
        t0 = time.perf_counter()
        n = fill_pieces(self)
        print(f"bench.soak_server: filled {n} token pieces ({self.n_tokens} ids x 2 flags) "
              f"in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)

    vocab.Vocab.__init__ = init  # type: ignore[method-assign]


def main(argv: Sequence[str] | None = None) -> int:
    install()
    return cli.main(argv)


if __name__ == "__main__":
    raise SystemExit(main())
