"""Decoding through the binding: determinism, sequence isolation, KV ops, state, GIL, bad input.

Tolerance: llama.cpp's CPU kernels are not bit-identical across batch shapes, so logits of the
same sequence decoded in different batches are compared with max |diff| <= 1e-3 (observed
~1e-6); a mix-up between sequences shows differences of order 1, far beyond it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import native
from native.errors import DecodeAbortedError

TOL = 1e-3


@pytest.fixture(scope="module")
def model(tiny_bpe_path: Path) -> native.Model:
    return native.Model(tiny_bpe_path)


def _ctx(model: native.Model, n_seq: int = 4, n_ctx: int = 1024) -> native.Context:
    return native.Context(model, native.ContextParams(n_ctx=n_ctx, n_seq_max=n_seq, n_batch=512,
                                                      n_threads=2))


def _prompts(model: native.Model) -> list[list[int]]:
    texts = ["The quick brown fox", "Once upon a time, in a land far away",
             "def fibonacci(n):", "日本語のテキスト and more"]
    return [model.vocab.tokenize(t) for t in texts]


def _decode_alone(model: native.Model, tokens: list[int]) -> np.ndarray:
    with _ctx(model, n_seq=1) as ctx:
        batch = native.Batch(512)
        batch.add_sequence(tokens, 0, 0, output_last=True)
        ctx.decode(batch)
        return np.array(ctx.logits_ith(batch.n_tokens - 1))


def test_greedy_is_deterministic(model: native.Model) -> None:
    def run() -> list[int]:
        with _ctx(model, n_seq=1) as ctx, native.SamplerChain(model.vocab) as chain:
            chain.greedy()
            batch = native.Batch(64)
            toks = model.vocab.tokenize("Hello")
            idx = batch.add_sequence(toks, 0, 0, True)
            pos, out = len(toks), []
            for _ in range(16):
                ctx.decode(batch)
                t = chain.sample(ctx, idx)
                out.append(t)
                batch.clear()
                idx = batch.add(t, pos, 0, True)
                pos += 1
            return out

    first = run()
    assert first == run()
    assert len(set(first)) > 1


def test_multi_sequence_batch_matches_single(model: native.Model) -> None:
    prompts = _prompts(model)
    alone = [_decode_alone(model, p) for p in prompts]
    with _ctx(model) as ctx:
        batch = native.Batch(512)
        idx = [batch.add_sequence(p, 0, s, True) for s, p in enumerate(prompts)]
        ctx.decode(batch)
        for s, i in enumerate(idx):
            together = np.asarray(ctx.logits_ith(i))
            assert np.abs(together - alone[s]).max() <= TOL, f"sequence {s} differs"
            for other in range(len(prompts)):
                if other != s:  # the check would catch a mix-up
                    assert np.abs(together - alone[other]).max() > 100 * TOL


def test_seq_rm_then_redecode_matches_fresh(model: native.Model) -> None:
    a = model.vocab.tokenize("The weather today is sunny and warm")
    b = model.vocab.tokenize(" cold and rainy", add_special=False)
    keep = 5
    fresh = _decode_alone(model, a[:keep] + b)
    with _ctx(model) as ctx:
        batch = native.Batch(512)
        batch.add_sequence(a, 0, 2, True)
        ctx.decode(batch)
        assert ctx.seq_pos_max(2) == len(a) - 1
        assert ctx.seq_rm(2, keep, -1)
        assert ctx.seq_pos_max(2) == keep - 1
        batch.clear()
        i = batch.add_sequence(b, keep, 2, True)
        ctx.decode(batch)
        assert np.abs(np.asarray(ctx.logits_ith(i)) - fresh).max() <= TOL


def test_seq_state_roundtrip_exact(model: native.Model, tmp_path: Path) -> None:
    toks = model.vocab.tokenize("State save and restore")
    nxt = model.vocab.tokenize(" next", add_special=False)
    with _ctx(model) as ctx:
        batch = native.Batch(64)
        batch.add_sequence(toks, 0, 1, True)
        ctx.decode(batch)
        state = ctx.seq_state(1)
        ctx.save_seq_file(tmp_path / "slot.bin", 1, toks)
        batch.clear()
        i = batch.add_sequence(nxt, len(toks), 1, True)
        ctx.decode(batch)
        want = np.array(ctx.logits_ith(i))
        for restore in ("bytes", "file"):
            ctx.seq_rm(1)
            assert ctx.seq_pos_max(1) == -1
            if restore == "bytes":
                ctx.set_seq_state(state, 3)
                seq = 3
            else:
                assert ctx.load_seq_file(tmp_path / "slot.bin", 0) == toks
                seq = 0
            batch.clear()
            i = batch.add_sequence(nxt, len(toks), seq, True)
            ctx.decode(batch)
            assert np.array_equal(np.asarray(ctx.logits_ith(i)), want), restore
            ctx.seq_rm(seq)


def test_an_interrupted_decode_leaves_nothing_behind(
        model: native.Model, caplog: pytest.LogCaptureFixture) -> None:
    kept = model.vocab.tokenize("The weather today is")
    more = model.vocab.tokenize(" sunny and warm", add_special=False)
    fresh = _decode_alone(model, kept + more)
    with _ctx(model) as ctx:
        batch = native.Batch(512)
        batch.add_sequence(kept, 0, 1, False)
        ctx.decode(batch)
        batch.clear()
        i = batch.add_sequence(more, len(kept), 1, True)
        assert not ctx.interrupt()  # not allowed: nothing happens
        ctx.allow_interrupt(True)
        assert ctx.interrupt()  # before the decode: in force until allowed or not again
        with caplog.at_level(logging.DEBUG, logger="llama.cpp"), pytest.raises(
                DecodeAbortedError):
            ctx.decode(batch)
        assert ctx.seq_pos_max(1) == len(kept) - 1  # what was there before, nothing of the rest
        assert any("compute" in r.getMessage() for r in caplog.records)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        with pytest.raises(DecodeAbortedError):  # still interrupted
            ctx.decode(batch)
        ctx.allow_interrupt(False)
        ctx.decode(batch)
        assert np.abs(np.asarray(ctx.logits_ith(i)) - fresh).max() <= TOL


def test_decode_releases_the_gil(model: native.Model) -> None:
    ctx = native.Context(model, native.ContextParams(n_ctx=2048, n_batch=2048, n_ubatch=2048,
                                                     n_threads=1))
    batch = native.Batch(2048)
    toks = (model.vocab.tokenize("lorem ipsum dolor sit amet " * 200)[:2000])
    batch.add_sequence(toks, 0, 0, True)
    ticks = 0
    stop = threading.Event()

    def spin() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0)

    t = threading.Thread(target=spin)
    t.start()
    try:
        start = time.perf_counter()
        ticks_before = ticks
        ctx.decode(batch)
        elapsed = time.perf_counter() - start
        during = ticks - ticks_before
    finally:
        stop.set()
        t.join()
        ctx.close()
    assert elapsed > 0.01, "decode too short to tell"
    assert during > 100, f"only {during} ticks of the other thread in a {elapsed:.3f}s decode"


def test_invalid_inputs_raise_instead_of_aborting(model: native.Model, tmp_path: Path) -> None:
    with _ctx(model, n_seq=2, n_ctx=256) as ctx:
        batch = native.Batch(16)
        batch.add(model.vocab.n_tokens, 0, 0, True)
        with pytest.raises(native.InvalidInputError, match="outside the vocabulary"):
            ctx.decode(batch)
        batch.clear()
        batch.add(1, 0, 2, True)
        with pytest.raises(native.InvalidInputError, match="sequence id"):
            ctx.decode(batch)
        batch.clear()
        batch.add(1, ctx.n_ctx_seq, 0, True)
        with pytest.raises(native.InvalidInputError, match="position"):
            ctx.decode(batch)
        for bad in (2, -2, 1 << 20):
            with pytest.raises(native.InvalidInputError, match="sequence id"):
                ctx.seq_rm(bad)
            with pytest.raises(native.InvalidInputError, match="sequence id"):
                ctx.seq_pos_max(bad)
        with pytest.raises(native.InvalidInputError):
            ctx.logits_ith(5)
        # the context still works afterwards
        batch.clear()
        batch.add(1, 0, 0, True)
        ctx.decode(batch)
    with pytest.raises(native.ModelLoadError, match="not found"):
        native.Model(tmp_path / "missing.gguf")
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 64)
    with pytest.raises(native.ModelLoadError):
        native.Model(corrupt)
    notgguf = tmp_path / "text.gguf"
    notgguf.write_text("hello")
    with pytest.raises(native.ModelLoadError, match="not a GGUF"):
        native.Model(notgguf)
    with pytest.raises(native.InvalidInputError):
        native.Context(model, native.ContextParams(n_seq_max=0))


def test_progress_callback_and_abort(tiny_bpe_path: Path) -> None:
    seen: list[float] = []

    def record(p: float) -> bool:
        seen.append(p)
        return True

    m = native.Model(tiny_bpe_path, progress=record)
    assert seen and seen[-1] == pytest.approx(1.0)
    m.close()
    m.close()  # freeing twice is a no-op
    with pytest.raises(native.ModelLoadError):
        native.Model(tiny_bpe_path, progress=lambda p: False)


def test_samplers_all_construct(model: native.Model) -> None:
    with _ctx(model, n_seq=1) as ctx:
        batch = native.Batch(64)
        i = batch.add_sequence(model.vocab.tokenize("sampling"), 0, 0, True)
        ctx.decode(batch)
        chain = (native.SamplerChain(model.vocab)
                 .logit_bias({5: 1.0, 7: float("-inf")})
                 .penalties(64, 1.1, 0.1, 0.1)
                 .dry(0.8, 1.75, 2, 64, ["\n", ":"])
                 .top_k(40).typical(0.9).top_p(0.9).min_p(0.05).xtc(0.1, 0.1)
                 .top_n_sigma(2.0).temp_ext(0.8, 0.1, 1.0).dist(42))
        tok, top = chain.sample_with_probs(ctx, i, 5)
        assert 0 <= tok < model.vocab.n_tokens and tok != 7
        assert top and abs(sum(p for _, p in top)) <= 1.0 + 1e-5
        chain.close()
        builds: tuple[Callable[[native.SamplerChain], native.SamplerChain], ...] = (
            lambda c: c.temp(0.5).mirostat(5.0, 0.1, 100, 1),
            lambda c: c.temp(0.5).mirostat_v2(5.0, 0.1, 1),
            lambda c: c.grammar('root ::= "yes" | "no"').greedy(),
            lambda c: c.infill().greedy())
        for build in builds:
            with build(native.SamplerChain(model.vocab)) as c:
                assert 0 <= c.sample(ctx, i) < model.vocab.n_tokens
        with pytest.raises(native.SamplerError):
            native.SamplerChain(model.vocab).grammar("root ::= undefined_rule")
        with pytest.raises(native.InvalidInputError):
            native.SamplerChain(model.vocab).logit_bias({-1: 1.0})
