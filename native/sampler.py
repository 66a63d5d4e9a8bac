"""libllama's sampler chain: every sampler llama.h offers, added in the caller's order.

A chain owns the samplers added to it; the chain itself is freed exactly once by close().
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from native._ffi import ffi, lib
from native.errors import InvalidInputError, SamplerError

if TYPE_CHECKING:
    from native.context import Context
    from native.vocab import Vocab

DEFAULT_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: a random seed
NO_TOKEN = -1  # sample_parallel's answer for a chain that selected nothing
# The most tokens a top-k preselection keeps beside its k (see preselect_top_k). Sampling one
# token here (128k vocabulary, top_k 40, greedy) took 0.07 ms with none kept, 0.10 with 64,
# 0.14 with 128 and 6.4 ms with 2,000, against 0.13-0.15 ms without preselection.
PRESELECT_MAX_KEEP = 64
# Candidate buffers are always written before they are read, and with a top-k preselection only
# their first few entries ever are: zeroing 1.5 MB per request (~50 us, and a page fault per
# 4 KB) would be wasted.
_alloc_uncleared = ffi.new_allocator(should_clear_after_alloc=False)


def _seed(seed: int) -> int:
    if seed < 0 or seed == DEFAULT_SEED:
        return DEFAULT_SEED
    if seed > 0xFFFFFFFF:
        raise InvalidInputError("seed must fit in 32 bits")
    return seed


class SamplerChain:
    def __init__(self, vocab: Vocab, no_perf: bool = True) -> None:
        self.vocab = vocab
        params = lib.llama_sampler_chain_default_params()
        params.no_perf = no_perf
        self._ptr: Any = lib.llama_sampler_chain_init(params)
        self.names: list[str] = []
        self._cand: Any = None  # llama_token_data[n_vocab], made on first use
        self._preselect_k = 0  # see preselect_top_k
        self._preselect_keep: Any = ffi.NULL
        self._preselect_n_keep = 0

    @property
    def ptr(self) -> Any:
        if self._ptr == ffi.NULL:
            raise ValueError("sampler chain is closed")
        return self._ptr

    def close(self) -> None:
        if self._ptr != ffi.NULL:
            lib.llama_sampler_free(self._ptr)
            self._ptr = ffi.NULL

    def __enter__(self) -> SamplerChain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def _add(self, smpl: Any, name: str) -> SamplerChain:
        if smpl == ffi.NULL:
            raise SamplerError(f"could not create the {name} sampler")
        lib.llama_sampler_chain_add(self.ptr, smpl)
        self.names.append(name)
        return self

    # -- samplers ---------------------------------------------------------------------------
    def greedy(self) -> SamplerChain:
        return self._add(lib.llama_sampler_init_greedy(), "greedy")

    def dist(self, seed: int = DEFAULT_SEED) -> SamplerChain:
        return self._add(lib.llama_sampler_init_dist(_seed(seed)), "dist")

    def top_k(self, k: int) -> SamplerChain:
        return self._add(lib.llama_sampler_init_top_k(k), "top_k")

    def top_p(self, p: float, min_keep: int = 1) -> SamplerChain:
        return self._add(lib.llama_sampler_init_top_p(p, min_keep), "top_p")

    def min_p(self, p: float, min_keep: int = 1) -> SamplerChain:
        return self._add(lib.llama_sampler_init_min_p(p, min_keep), "min_p")

    def typical(self, p: float, min_keep: int = 1) -> SamplerChain:
        return self._add(lib.llama_sampler_init_typical(p, min_keep), "typical_p")

    def temp(self, t: float) -> SamplerChain:
        return self._add(lib.llama_sampler_init_temp(t), "temperature")

    def temp_ext(self, t: float, delta: float, exponent: float) -> SamplerChain:
        return self._add(lib.llama_sampler_init_temp_ext(t, delta, exponent), "temperature")

    def xtc(self, p: float, t: float, min_keep: int = 1, seed: int = DEFAULT_SEED) -> SamplerChain:
        return self._add(lib.llama_sampler_init_xtc(p, t, min_keep, _seed(seed)), "xtc")

    def top_n_sigma(self, n: float) -> SamplerChain:
        return self._add(lib.llama_sampler_init_top_n_sigma(n), "top_n_sigma")

    def mirostat(self, tau: float, eta: float, m: int = 100,
                 seed: int = DEFAULT_SEED) -> SamplerChain:
        smpl = lib.llama_sampler_init_mirostat(self.vocab.n_tokens, _seed(seed), tau, eta, m)
        return self._add(smpl, "mirostat")

    def mirostat_v2(self, tau: float, eta: float, seed: int = DEFAULT_SEED) -> SamplerChain:
        return self._add(lib.llama_sampler_init_mirostat_v2(_seed(seed), tau, eta), "mirostat_v2")

    def grammar(self, grammar: str, root: str = "root") -> SamplerChain:
        """A GBNF grammar constraint; raises SamplerError if it does not parse."""
        smpl = lib.llama_sampler_init_grammar(self.vocab._ptr, grammar.encode(), root.encode())
        if smpl == ffi.NULL:
            raise SamplerError("the grammar does not parse (llama.cpp's log says where)")
        return self._add(smpl, "grammar")

    def grammar_lazy(self, grammar: str, trigger_patterns: Sequence[str],
                     trigger_tokens: Sequence[int] = (), root: str = "root") -> SamplerChain:
        """A grammar that applies only once a trigger pattern or token appears."""
        pats = [ffi.new("char[]", p.encode()) for p in trigger_patterns]
        pat_arr = ffi.new("const char *[]", pats) if pats else ffi.NULL
        toks = self.vocab.check_tokens(trigger_tokens)
        tok_arr = ffi.new("llama_token[]", toks) if toks else ffi.NULL
        smpl = lib.llama_sampler_init_grammar_lazy_patterns(
            self.vocab._ptr, grammar.encode(), root.encode(), pat_arr, len(pats),
            tok_arr, len(toks))
        if smpl == ffi.NULL:
            raise SamplerError("the grammar does not parse (llama.cpp's log says where)")
        return self._add(smpl, "grammar")

    def insert_grammar(self, grammar: Grammar, index: int) -> None:
        """Put `grammar` (which the chain then owns) at position `index`, every sampler keeping
        its state (libllama only appends: the later ones are taken out and added back). A
        top-k preselection no longer holds once a grammar may rule out any token."""
        n = len(self)
        if not 0 <= index <= n:
            raise InvalidInputError(f"no position {index} in a chain of {n} samplers")
        ptr = self.ptr
        later = [lib.llama_sampler_chain_remove(ptr, index) for _ in range(n - index)]
        lib.llama_sampler_chain_add(ptr, grammar.release())
        for smpl in later:
            lib.llama_sampler_chain_add(ptr, smpl)
        self.names.insert(index, "grammar")
        self._preselect_k, self._preselect_keep, self._preselect_n_keep = 0, ffi.NULL, 0

    def penalties(self, last_n: int, repeat: float, freq: float, present: float) -> SamplerChain:
        if last_n < -1:
            raise InvalidInputError("repeat_last_n must be >= -1")
        smpl = lib.llama_sampler_init_penalties(self.vocab.n_tokens, last_n, repeat, freq,
                                                present)
        return self._add(smpl, "penalties")

    def dry(self, multiplier: float, base: float, allowed_length: int, penalty_last_n: int,
            sequence_breakers: Sequence[str]) -> SamplerChain:
        keep = [ffi.new("char[]", s.encode()) for s in sequence_breakers]
        arr = ffi.new("const char *[]", keep) if keep else ffi.NULL
        smpl = lib.llama_sampler_init_dry(self.vocab._ptr, multiplier, base, allowed_length,
                                          penalty_last_n, arr, len(keep))
        return self._add(smpl, "dry")

    def adaptive_p(self, target: float, decay: float, seed: int = DEFAULT_SEED) -> SamplerChain:
        return self._add(lib.llama_sampler_init_adaptive_p(target, decay, _seed(seed)),
                         "adaptive_p")

    def logit_bias(self, bias: Mapping[int, float]) -> SamplerChain:
        """Add bias to token logits; -inf bans a token."""
        items = list(bias.items())
        for tok, _ in items:
            self.vocab.check_token(tok)
        arr = ffi.new("llama_logit_bias[]", max(len(items), 1))
        for i, (tok, b) in enumerate(items):
            arr[i].token = tok
            arr[i].bias = b
        smpl = lib.llama_sampler_init_logit_bias(self.vocab.n_tokens, len(items), arr)
        return self._add(smpl, "logit_bias")

    def infill(self) -> SamplerChain:
        return self._add(lib.llama_sampler_init_infill(self.vocab._ptr), "infill")

    # -- use --------------------------------------------------------------------------------
    def preselect_top_k(self, k: int, keep: Sequence[int] = ()) -> None:
        """Declare that this chain's first top-k keeps k tokens and that every sampler before
        it changes the logits of `keep` at most. sample()/sample_parallel() then rank the
        vocabulary once and hand the chain only k + len(keep) candidates: the same tokens come
        out (up to ties) at a fraction of the cost. A wrong declaration gives wrong samples.
        """
        if k <= 0:
            raise InvalidInputError("preselect_top_k needs k > 0")
        toks = sorted(set(self.vocab.check_tokens(keep)))
        # Nothing to leave out, or so many kept tokens that the shuffled candidates make
        # libllama's logit bias search them one by one (k + n tokens for each of n): as usual.
        if k + len(toks) >= self.vocab.n_tokens or len(toks) > PRESELECT_MAX_KEEP:
            self._preselect_k, self._preselect_keep, self._preselect_n_keep = 0, ffi.NULL, 0
            return
        self._preselect_keep = ffi.new("llama_token[]", toks) if toks else ffi.NULL
        self._preselect_k, self._preselect_n_keep = k, len(toks)

    def candidates(self) -> Any:
        """This chain's llama_token_data[n_vocab] work buffer (made on first use)."""
        n = self.vocab.n_tokens
        if self._cand is None or len(self._cand) != n:
            self._cand = _alloc_uncleared("llama_token_data[]", n)
        return self._cand

    def sample(self, ctx: Context, idx: int) -> int:
        """Sample from batch output idx and accept the token into the chain's state."""
        token = sample_parallel(ctx, [(self, idx)], 1)[0]
        if token == NO_TOKEN:
            raise SamplerError("the sampler chain selected no token")
        return token

    def sample_with_probs(self, ctx: Context, idx: int,
                          n_probs: int) -> tuple[int, list[tuple[int, float]]]:
        """Sample like sample(), also returning the n_probs most likely candidates that the
        chain left, with their post-sampling probabilities (llama-server's post_sampling_probs).
        """
        logits = ctx.logits_ith(idx)
        n = len(logits)
        cand = self.candidates()
        lib.llama_grpc_fill_candidates(cand, ffi.from_buffer("float[]", logits), n)
        arr = ffi.new("llama_token_data_array *")
        arr.data, arr.size, arr.selected, arr.sorted = cand, n, -1, False
        lib.llama_sampler_apply(self.ptr, arr)
        # A ruled-out candidate (-inf) selected when every one was: accepting it would make
        # the grammar throw through the C API and end the process.
        if (arr.selected < 0 or arr.selected >= arr.size
                or arr.data[arr.selected].logit == float("-inf")):
            raise SamplerError("the sampler chain selected no token")
        size = int(arr.size)
        # Samplers may point `data` at their own buffer; read what the chain left.
        left = arr.data
        token = int(left[arr.selected].id)
        lib.llama_sampler_accept(self.ptr, token)
        order = ffi.new("int32_t[]", max(min(n_probs, size), 0))
        k = lib.llama_grpc_top_by_p(left, size, len(order), order)
        if k < 0:
            raise MemoryError("no memory to rank the candidates")
        return token, [(int(left[i].id), float(left[i].p)) for i in order[0:k]]

    def accept(self, token: int) -> None:
        self.vocab.check_token(token)
        lib.llama_sampler_accept(self.ptr, token)

    def accept_many(self, tokens: Sequence[int]) -> None:
        """accept() each token in order (checked once, up front)."""
        ptr = self.ptr
        for token in self.vocab.check_tokens(tokens):
            lib.llama_sampler_accept(ptr, token)

    def reset(self) -> None:
        lib.llama_sampler_reset(self.ptr)

    @property
    def seed(self) -> int:
        return int(lib.llama_sampler_get_seed(self.ptr))

    def __len__(self) -> int:
        return int(lib.llama_sampler_chain_n(self.ptr))

    def perf(self) -> dict[str, float]:
        d = lib.llama_perf_sampler(self.ptr)
        return {"t_sample_ms": d.t_sample_ms, "n_sample": d.n_sample}


class Grammar:
    """A grammar sampler outside any chain: it says whether a token may come next, and takes
    only such tokens (libllama throws through its C API, ending the process, when a token the
    grammar refuses is accepted). SamplerChain.insert_grammar puts it into a chain."""

    def __init__(self, vocab: Vocab, grammar: str, root: str = "root") -> None:
        self.vocab = vocab
        self._ptr: Any = lib.llama_sampler_init_grammar(vocab._ptr, grammar.encode(),
                                                        root.encode())
        if self._ptr == ffi.NULL:
            raise SamplerError("the grammar does not parse (llama.cpp's log says where)")
        self._one = ffi.new("llama_token_data[1]")
        self._arr = ffi.new("llama_token_data_array *")

    def allows(self, token: int) -> bool:
        """Whether `token` may come next (the grammar applied to a one-candidate array)."""
        self.vocab.check_token(token)
        if self._ptr == ffi.NULL:
            raise ValueError("the grammar sampler is closed or in a chain")
        one, arr = self._one, self._arr
        one[0].id, one[0].logit, one[0].p = token, 0.0, 0.0
        arr.data, arr.size, arr.selected, arr.sorted = one, 1, -1, False
        lib.llama_sampler_apply(self._ptr, arr)
        return bool(one[0].logit != float("-inf"))

    def accept(self, token: int) -> bool:
        """Take `token` if the grammar allows it; False (and nothing taken) if not."""
        if not self.allows(token):
            return False
        lib.llama_sampler_accept(self._ptr, token)
        return True

    def release(self) -> Any:
        """The native sampler, now the caller's to free."""
        ptr = self._ptr
        if ptr == ffi.NULL:
            raise ValueError("the grammar sampler is closed or in a chain")
        self._ptr = ffi.NULL
        return ptr

    def close(self) -> None:
        if self._ptr != ffi.NULL:
            lib.llama_sampler_free(self._ptr)
            self._ptr = ffi.NULL

    def __del__(self) -> None:
        self.close()


def sample_parallel(ctx: Context, work: Sequence[tuple[SamplerChain, int]],
                    n_threads: int) -> list[int]:
    """Sample each (chain, batch output index) pair of the last decode, on up to n_threads
    threads (one native call, the GIL released throughout); each token is accepted into its
    chain. A chain that selected no token gets NO_TOKEN. Every chain must be distinct: a chain
    is not safe to use from two threads.
    """
    n = len(work)
    if n == 0:
        return []
    if n > 1 and len({id(chain) for chain, _ in work}) != n:
        raise InvalidInputError("a sampler chain appears twice in one parallel sample")
    n_vocab = ctx.n_vocab
    items = _sample_items(n)
    for item, (chain, idx) in zip(items, work, strict=False):  # items: n or more
        if chain.vocab.n_tokens != n_vocab:
            raise InvalidInputError("the sampler chain was made for another vocabulary")
        item.chain, item.idx, item.cand = chain.ptr, idx, chain.candidates()
        item.top_k, item.keep = chain._preselect_k, chain._preselect_keep
        item.n_keep = chain._preselect_n_keep
    rc = lib.llama_grpc_sample_parallel(ctx.ptr, items, n, n_vocab, n_threads)
    if rc < 0:
        raise InvalidInputError(f"no logits for batch index {work[-1 - rc][1]}")
    return [int(items[i].token) for i in range(n)]


# This thread's item array for sample_parallel, reused by the next call on the same thread
# (a call per decode step: one allocation a token on a single stream, otherwise). Per thread:
# the native call runs without the GIL, so two threads may be sampling at once.
_scratch = threading.local()


def _sample_items(n: int) -> Any:
    items = getattr(_scratch, "items", None)
    if items is None or len(items) < n:
        items = _scratch.items = ffi.new("llama_grpc_sample_item[]", max(n, 8))
    return items


def top_logits(logits: memoryview[float], k: int) -> tuple[list[int], float]:
    """The ids of the k largest logits of a row (best first, ties by lower id) and the row's
    log-sum-exp, which turns a logit into a log-probability: logit - lse."""
    n = len(logits)
    ids = ffi.new("int32_t[]", max(min(k, n), 0))
    lse = ffi.new("double *")
    got = lib.llama_grpc_top_logits(ffi.from_buffer("float[]", logits), n, len(ids), ids, lse)
    if got < 0:
        raise MemoryError("no memory to rank the logits")
    return ffi.unpack(ids, got), float(lse[0])


def argmax_logit(logits: memoryview[float]) -> int:
    """The id of a row's largest logit (ties: the lower id); ValueError for an empty row."""
    best = int(lib.llama_grpc_argmax(ffi.from_buffer("float[]", logits), len(logits)))
    if best < 0:
        raise ValueError("an empty logits row has no largest logit")
    return best


def float32(x: float) -> float:
    """x as a sampler receives it: rounded to a C float (too large a value becomes infinite)."""
    return float(ffi.cast("float", x))
