"""Engine records -> llama.v1 messages (the JSON field names are llama-server's)."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from llama.v1 import common_pb2, completion_pb2

from native import Vocab
from service.engine.events import Finished, Timings, TokenProbs
from service.engine.params import CompletionParams, SamplingParams
from service.engine.textstream import incomplete_utf8_tail
from service.errors import ERROR_KINDS
from service.typed_outputs import stop_type_enum


def timings_msg(t: Timings, cache_n: int = 0) -> Any:
    return common_pb2.Timings(
        cache_n=cache_n, prompt_n=t.prompt_n, prompt_ms=t.prompt_ms,
        prompt_per_token_ms=t.prompt_per_token_ms, prompt_per_second=t.prompt_per_second,
        predicted_n=t.predicted_n, predicted_ms=t.predicted_ms,
        predicted_per_token_ms=t.predicted_per_token_ms,
        predicted_per_second=t.predicted_per_second)


def usage_msg(fin: Finished) -> Any:
    return common_pb2.Usage(
        completion_tokens=len(fin.tokens), prompt_tokens=fin.tokens_evaluated,
        total_tokens=fin.tokens_evaluated + len(fin.tokens),
        prompt_tokens_details=common_pb2.PromptTokensDetails(cached_tokens=fin.tokens_cached))


def error_msg(kind: str, message: str) -> Any:
    info = ERROR_KINDS[kind]
    return common_pb2.ErrorInfo(code=info.http_status, message=message, type=info.type)


def token_text(piece: bytes) -> str:
    """A token's text as llama-server reports it: a character cut off at the end is left out
    (its bytes are in `bytes`); other invalid bytes become U+FFFD."""
    return piece[:len(piece) - incomplete_utf8_tail(piece)].decode("utf-8", "replace")


def _candidate(vocab: Vocab, tok: int, value: float, post: bool) -> Any:
    piece = vocab.token_to_piece(tok, special=True)
    c = common_pb2.TokenCandidate(id=tok, token=token_text(piece),
                                  bytes=list(piece))
    if post:
        c.prob = value
    else:
        c.logprob = value
    return c


def probability_msg(vocab: Vocab, p: TokenProbs) -> Any:
    piece = vocab.token_to_piece(p.id, special=True)
    msg = common_pb2.TokenProbability(id=p.id, token=token_text(piece),
                                      bytes=list(piece))
    top = [_candidate(vocab, t, v, p.post_sampling) for t, v in p.top]
    if p.post_sampling:
        msg.prob = p.value
        msg.top_probs.extend(top)
    else:
        msg.logprob = p.value
        msg.top_logprobs.extend(top)
    return msg


def _setting_value(name: str, value: Any) -> Any:
    if name == "seed":
        return value & 0xFFFFFFFF
    if name == "logit_bias":  # bans (-inf) are not biases llama-server reports
        return [common_pb2.LogitBiasEntry(token=t, bias=b) for t, b in value
                if b != float("-inf")]
    if name == "lora":
        return [common_pb2.LoraScale(id=i, scale=s) for i, s in value]
    return list(value) if isinstance(value, tuple) else value


_SETTING_FIELDS = frozenset(common_pb2.GenerationSettings.DESCRIPTOR.fields_by_name)
_SAMPLING_SETTINGS = tuple(f.name for f in fields(SamplingParams) if f.name in _SETTING_FIELDS)
_COMPLETION_SETTINGS = tuple(f.name for f in fields(CompletionParams)
                             if f.name in _SETTING_FIELDS)


def generation_settings(params: CompletionParams, n_ctx: int, model: str,
                        stream: bool = True) -> Any:
    """llama-server's generation_settings: every parameter field of the same name, as used."""
    values = {name: _setting_value(name, getattr(params.sampling, name))
              for name in _SAMPLING_SETTINGS}
    values.update({name: _setting_value(name, getattr(params, name))
                   for name in _COMPLETION_SETTINGS})
    return common_pb2.GenerationSettings(max_tokens=params.n_predict, stream=stream,
                                         n_ctx=n_ctx, model=model, **values)


def final_completion_chunk(gen_id: str, index: int, fin: Finished, slot_id: int,
                           settings: Any, model: str, prompt: str) -> Any:
    return completion_pb2.CompletionChunk(
        id=gen_id, index=index, stop=True, id_slot=slot_id,
        tokens_predicted=len(fin.tokens), tokens_evaluated=fin.tokens_evaluated,
        timings=timings_msg(fin.timings, fin.tokens_cached), stop_type=fin.stop_type,
        typed_stop_type=stop_type_enum(fin.stop_type),
        stopping_word=fin.stopping_word, truncated=fin.truncated,
        tokens_cached=fin.tokens_cached, model=model, prompt=prompt,
        generation_settings=settings, usage=usage_msg(fin))
