"""GBNF grammars run by llama.cpp itself, for tests: whether a grammar accepts a text, and what
the tiny random model writes under one.

Acceptance asks llama.cpp's grammar sampler token by token: a chain of logit_bias(+1e9 on the
token) -> grammar -> greedy picks that token exactly when the grammar allows it. A final
end-of-generation token is allowed only once the grammar is complete. Each step rebuilds the
chain and replays the accepted prefix, since a rejected token must never reach accept() (that
aborts inside llama.cpp).
"""

from __future__ import annotations

import native


class GrammarRunner:
    def __init__(self, model: native.Model) -> None:
        self.model, self.vocab = model, model.vocab
        self.eog = self.vocab.eot if self.vocab.eot >= 0 else self.vocab.eos
        self._match_ctx = native.Context(model, native.ContextParams(n_ctx=64, n_threads=2))
        batch = native.Batch(16)
        # Any logits do: the bias decides, the grammar only vetoes.
        self._match_idx = batch.add_sequence(self.vocab.tokenize("x"), 0, 0, True)
        self._match_ctx.decode(batch)
        self._gen_ctx = native.Context(model, native.ContextParams(n_ctx=512, n_threads=2))

    def close(self) -> None:
        self._match_ctx.close()
        self._gen_ctx.close()

    def parses(self, grammar: str) -> bool:
        try:
            native.SamplerChain(self.vocab).grammar(grammar).close()
        except native.SamplerError:
            return False
        return True

    def accepts(self, grammar: str, text: str) -> bool:
        """Whether `grammar` matches all of `text` (and nothing shorter stops it)."""
        tokens = self.vocab.tokenize(text, add_special=False)
        return all(self._allows(grammar, tokens[:k], tok)
                   for k, tok in enumerate([*tokens, self.eog]))

    def _allows(self, grammar: str, prefix: list[int], token: int) -> bool:
        with native.SamplerChain(self.vocab) as chain:
            chain.logit_bias({token: 1e9}).grammar(grammar).greedy()
            for t in prefix:
                chain.accept(t)
            return chain.sample(self._match_ctx, self._match_idx) == token

    def walk(self, grammar: str, seed: int, budget: int) -> str | None:
        """A random text of `grammar`: tokens drawn (with `seed`) from one fixed set of logits,
        so no decoding; None if `budget` tokens pass without the end of the grammar."""
        out = b""
        with native.SamplerChain(self.vocab) as chain:
            chain.grammar(grammar).dist(seed)
            for _ in range(budget):
                tok = chain.sample(self._match_ctx, self._match_idx)
                if self.vocab.is_eog(tok):
                    return out.decode("utf-8")
                out += self.vocab.token_to_piece(tok)
        return None

    def generate(self, grammar: str, seed: int, budget: int,
                 prompt: str = "JSON:") -> str | None:
        """The model's text under `grammar` (sampling with `seed`) up to an end-of-generation
        token; None if `budget` tokens pass first."""
        ctx = self._gen_ctx
        ctx.memory_clear()
        tokens = self.vocab.tokenize(prompt)
        batch = native.Batch(512)
        idx, pos, out = batch.add_sequence(tokens, 0, 0, True), len(tokens), b""
        with native.SamplerChain(self.vocab) as chain:
            chain.grammar(grammar).dist(seed)
            for _ in range(budget):
                ctx.decode(batch)
                tok = chain.sample(ctx, idx)
                if self.vocab.is_eog(tok):
                    return out.decode("utf-8")
                out += self.vocab.token_to_piece(tok)
                batch.clear()
                idx = batch.add(tok, pos, 0, True)
                pos += 1
        return None
