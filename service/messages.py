"""Engine records -> llama.v1 messages (the JSON field names are llama-server's)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from llama.v1 import common_pb2, completion_pb2

from native import Vocab
from service.engine.events import Finished, Timings, TokenProbs
from service.engine.params import CompletionParams, SamplingParams
from service.engine.textstream import incomplete_utf8_tail
from service.errors import ERROR_KINDS
from service.typed_outputs import stop_type_enum

if TYPE_CHECKING:
    from service.runtime import Runtime


def timings_msg(t: Timings, cache_n: int = 0) -> Any:
    return common_pb2.Timings(
        cache_n=cache_n, prompt_n=t.prompt_n, prompt_ms=t.prompt_ms,
        prompt_per_token_ms=t.prompt_per_token_ms, prompt_per_second=t.prompt_per_second,
        predicted_n=t.predicted_n, predicted_ms=t.predicted_ms,
        predicted_per_token_ms=t.predicted_per_token_ms,
        predicted_per_second=t.predicted_per_second,
        # As llama-server: only when the request had drafts verified.
        draft_n=t.draft_n if t.draft_n else None,
        draft_n_accepted=t.draft_n_accepted if t.draft_n else None)


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


def _candidate(vocab: Vocab, tok: int, value: float, post: bool, special: bool) -> Any:
    piece = vocab.token_to_piece(tok, special=special)
    c = common_pb2.TokenCandidate(id=tok, token=token_text(piece),
                                  bytes=list(piece))
    if post:
        c.prob = value
    else:
        c.logprob = value
    return c


def probability_msg(vocab: Vocab, p: TokenProbs, special: bool,
                    keep_special: frozenset[int] = frozenset()) -> Any:
    """A token's probabilities with its text as llama-server writes them: a special token
    (an end of generation, a chat marker) is text only with --special, or for the chosen token
    one the request keeps (a chat format's preserved tokens); else "" and no bytes."""
    piece = vocab.token_to_piece(p.id, special=special or p.id in keep_special)
    msg = common_pb2.TokenProbability(id=p.id, token=token_text(piece),
                                      bytes=list(piece))
    top = [_candidate(vocab, t, v, p.post_sampling, special) for t, v in p.top]
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
    if name == "logit_bias":  # bans too, as -inf (JSON null, as llama-server writes them)
        return [common_pb2.LogitBiasEntry(token=t, bias=b) for t, b in value]
    if name == "lora":
        return [common_pb2.LoraScale(id=i, scale=s) for i, s in value]
    return list(value) if isinstance(value, tuple) else value


_SETTING_FIELDS = frozenset(common_pb2.GenerationSettings.DESCRIPTOR.fields_by_name)
_SAMPLING_SETTINGS = tuple(f.name for f in fields(SamplingParams) if f.name in _SETTING_FIELDS)
_COMPLETION_SETTINGS = tuple(f.name for f in fields(CompletionParams)
                             if f.name in _SETTING_FIELDS
                             and f.name not in ("chat_format", "generation_prompt"))


# What the pinned llama-server reports for a request read as plain text (its chat parser's
# format for /completion) and for a server started without --reasoning-format (its default is
# DEEPSEEK, though its help says "auto").
CONTENT_ONLY = "Content-only"
# Adaptive-p's defaults (common_params_sampling); no request field sets them yet.
ADAPTIVE_TARGET, ADAPTIVE_DECAY = -1.0, 0.9


def chat_format_name(template_source: str, use_jinja: bool) -> str:
    """The chat parser format llama-server echoes for a chat request (common_chat_format_name):
    content only on the legacy (non-Jinja) path; with Jinja every template gets a PEG parser,
    MiniMax-M3's and Gemma 4's their own (found by the markers llama.cpp looks for)."""
    if not use_jinja:
        return CONTENT_ONLY
    if all(m in template_source for m in ("]<]minimax[>[", "<tool_call>", "<invoke name=")):
        return "peg-minimax-m3"
    if "'<|tool_call>call:'" in template_source:
        return "peg-gemma4"
    return "peg-native"


def reasoning_format_name(configured: str) -> str:
    """The reasoning format llama-server echoes for the server's --reasoning-format value."""
    return "deepseek" if configured in ("", "auto") else configured


def generation_settings(params: CompletionParams, stream: bool = True,
                        reasoning_format: str = "deepseek",
                        chat_format: str = CONTENT_ONLY, eog: Sequence[int] = ()) -> Any:
    """llama-server's generation_settings: every parameter field of the same name, as used
    (task_params::to_json of the pinned build: no n_ctx or model, no draft settings). `eog`:
    the vocabulary's end-of-generation tokens, which ignore_eos bans (listed after the
    request's own biases, as llama-server lists them)."""
    values: dict[str, Any] = {
        "adaptive_target": ADAPTIVE_TARGET, "adaptive_decay": ADAPTIVE_DECAY,
        "backend_sampling": False, "speculative_types": params.speculative.types}
    values.update({name: _setting_value(name, getattr(params.sampling, name))
                   for name in _SAMPLING_SETTINGS})
    values.update({name: _setting_value(name, getattr(params, name))
                   for name in _COMPLETION_SETTINGS})
    if params.ignore_eos:
        values["logit_bias"] = [*values.get("logit_bias", ()), *(
            common_pb2.LogitBiasEntry(token=t, bias=float("-inf")) for t in eog)]
    return common_pb2.GenerationSettings(
        max_tokens=params.n_predict, stream=stream, reasoning_format=reasoning_format,
        chat_format=params.chat_format or chat_format,
        generation_prompt=params.generation_prompt, **values)


def request_settings(rt: Runtime, params: CompletionParams, stream: bool) -> Any:
    """generation_settings of a request this server runs."""
    return generation_settings(params, stream, reasoning_format_name(
        rt.config.chat.reasoning_format), eog=sorted(rt.engine.eog))


def default_settings(rt: Runtime) -> Any:
    """The settings /props and an idle slot report: the server's defaults, before a request
    sets its stream flag or its reasoning format (llama-server's slot defaults)."""
    return generation_settings(rt.defaults, stream=False, reasoning_format="none",
                               eog=sorted(rt.engine.eog))


def cells_at_end(fin: Finished) -> int:
    """llama-server's `tokens_cached`: the tokens its slot's cache holds when the generation
    ends: the prompt and every generated token but the last, which was sampled and never
    decoded. (After a context shift the cache holds fewer; the stream does not see shifts.)"""
    return fin.tokens_evaluated + max(len(fin.tokens) - 1, 0)


def final_completion_chunk(gen_id: str, index: int, fin: Finished, slot_id: int,
                           settings: Any, model: str, prompt: str) -> Any:
    return completion_pb2.CompletionChunk(
        id=gen_id, index=index, stop=True, id_slot=slot_id,
        tokens_predicted=len(fin.tokens), tokens_evaluated=fin.tokens_evaluated,
        timings=timings_msg(fin.timings, fin.tokens_cached), stop_type=fin.stop_type,
        typed_stop_type=stop_type_enum(fin.stop_type),
        stopping_word=fin.stopping_word, truncated=fin.truncated,
        tokens_cached=cells_at_end(fin), model=model, prompt=prompt,
        generation_settings=settings, usage=usage_msg(fin))
