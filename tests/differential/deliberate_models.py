# ruff: noqa: E501  (data: one reason per line)
"""Deliberate differences of the cases on other models (corpus_models.py): embeddings, reranking,
LoRA adapters, speculative decoding; deliberate.py merges them into DELIBERATE (docs/fidelity.md
lists them too)."""

from __future__ import annotations

_CHATML = 'MiniLM has no chat template, so both servers fall back to chatml; our built-in chatml is our own text (never copied), so `chat_template` differs (as `props [chatml]`)'
_EMB500 = 'llama-server answers 500 server_error for this client error (an exception its handler throws); we answer 400 invalid_request_error'
_GEN501 = 'an --embedding or --reranking server refuses generation with 501 not_supported_error and the message llama-server gave while its README documented it (docs/api.md); the pinned llama-server refuses with 500 server_error'
_TOPN = 'a negative top_n is a 400 (docs/api.md); llama-server fails with 500 server_error'
_ECHO = "`generation_settings.lora` shows the adapter scales in effect for the request (docs/api.md); llama-server echoes the request's `lora` list as given (empty when the request has none, zero scales kept)"
_LID = 'an adapter id that names no loaded adapter is a 400 (docs/api.md); llama-server ignores the entry and answers 200'
_LSCALE = 'a LoRA scale that is not a JSON number is a 400 (docs/api.md); llama-server reads it as 0 and answers 200'
_PID = 'an adapter id that names no loaded adapter is a 400 and nothing changes (docs/api.md); llama-server ignores the entry, sets the adapters not listed to 0 and answers success'
_PSCALE = 'a LoRA scale that is not a JSON number is a 400 and nothing changes (docs/api.md); llama-server reads it as 0 and answers success'
_INIT = "--lora-init-without-apply loads the adapters at scale 0 until POST /lora-adapters (its help text, docs/api.md); the pinned llama-server lists them at scale 1 and applies them anyway (the flag only skips the context's first set; its slots apply the listed scales)"
_MD = "`-md` alone drafts with the draft model, as the spec's llama-server did (docs/cli.md); the pinned llama-server loads it unused unless `--spec-type draft-simple` is given (its slots say `speculative: false`, no draft counts in timings, `speculative.types` `none`)"
_SPF = "the spec README's per-request `speculative.n_max`/`n_min`/`p_min` are honoured (docs/api.md; here they stop every draft, so no draft counts); the pinned llama-server has these fields switched off and ignores them"
_SPBAD = 'an out-of-range or non-number `speculative.*` field is a 400 (docs/api.md); the pinned llama-server has these fields switched off and ignores them'

_QUERY = 'an empty `query` is a 400, as a missing one (nothing to rank against; docs/api.md); llama-server ranks the documents against the empty text and answers 200'
_TOPNSTR = 'a `top_n` that is not a number is a 400 (docs/api.md); llama-server ignores it and answers every document'

_RANKEMB = "/embedding on a --reranking server answers the pooled output, the rank score (one value); llama-server copies n_embd floats from that one-value output, reading past it (its send_embedding), so its 384 values are not the model's"

_SLOTPICK = "which of several free slots a request takes: ours the one next to busy slots, else the least recently used, the lowest id among equals (busy slots stay in one run of sequence ids, one decode a step; docs/design.md); llama-server the last of its least recently used; here the same two requests sit in swapped slots, each slot's fields otherwise equal"

MODEL_DELIBERATE: dict[str, str] = {
    'GET /slots after completions [spec-ngram]': _SLOTPICK,
    'POST /embedding on a reranker [rerank]': _RANKEMB,
    'POST /rerank empty query [rerank]': _QUERY,
    'POST /rerank top_n string [rerank]': _TOPNSTR,
    'GET /lora-adapters [lora-init]': _INIT,
    'GET /slots [spec-md]': _MD,
    'POST /embedding content null [emb-mean]': _EMB500,
    'POST /embedding content number [emb-mean]': _EMB500,
    'POST /embedding content object [emb-mean]': _EMB500,
    'POST /embedding encoding_format number [emb-mean]': _EMB500,
    'POST /embeddings input null [emb-mean]': _EMB500,
    'POST /embeddings input number [emb-mean]': _EMB500,
    'POST /embeddings input object [emb-mean]': _EMB500,
    'POST /lora-adapters bad id [lora-init]': _PID,
    'POST /lora-adapters bad id [lora]': _PID,
    'POST /lora-adapters bad scale [lora-init]': _PSCALE,
    'POST /lora-adapters bad scale [lora]': _PSCALE,
    'POST /rerank top_n -1 [rerank]': _TOPN,
    'POST /reranking top_n -1 [rerank]': _TOPN,
    'POST /v1/embeddings embd_normalize string [emb-mean]': _EMB500,
    'POST /v1/embeddings encoding_format number [emb-mean]': _EMB500,
    'POST /v1/embeddings input null [emb-mean]': _EMB500,
    'POST /v1/embeddings input number [emb-mean]': _EMB500,
    'POST /v1/embeddings input object [emb-mean]': _EMB500,
    'POST /v1/rerank top_n -1 [rerank]': _TOPN,
    'POST /v1/reranking top_n -1 [rerank]': _TOPN,
    'chat on an embedding model [emb-mean]': _GEN501,
    'completion on a reranker [rerank]': _GEN501,
    'completion on an embedding model [emb-mean]': _GEN501,
    'lora completion [lora-init]': _INIT,
    'lora completion [lora]': _ECHO,
    'lora completion after half [lora-init]': _ECHO,
    'lora completion after half [lora]': _ECHO,
    'lora completion lora bad id [lora-init]': _LID,
    'lora completion lora bad id [lora]': _LID,
    'lora completion lora bad scale [lora-init]': _LSCALE,
    'lora completion lora bad scale [lora]': _LSCALE,
    'lora completion lora empty [lora-init]': _INIT,
    'lora completion lora empty [lora]': _ECHO,
    'lora completion lora negative id [lora-init]': _LID,
    'lora completion lora negative id [lora]': _LID,
    'lora completion lora null [lora-init]': _INIT,
    'lora completion lora null [lora]': _ECHO,
    'lora completion lora no scale [lora-init]': _ECHO,
    'lora completion lora no scale [lora]': _ECHO,
    'lora completion lora off [lora-init]': _ECHO,
    'lora completion lora off [lora]': _ECHO,
    'props [emb-cls]': _CHATML,
    'props [emb-last]': _CHATML,
    'props [emb-mean]': _CHATML,
    'props [emb-none]': _CHATML,
    'props [rerank]': _CHATML,
    'spec chat [spec-md]': _MD,
    'spec completion [spec-md]': _MD,
    "spec completion speculative.n_max='x' [spec-draft]": _SPBAD,
    'spec completion speculative.n_max=-1 [spec-draft]': _SPBAD,
    'spec completion speculative.n_max=0 [spec-draft]': _SPF,
    'spec completion speculative.n_min=-1 [spec-draft]': _SPBAD,
    'spec completion speculative.p_min=-0.1 [spec-draft]': _SPBAD,
    'spec completion speculative.p_min=0.5 [spec-draft]': _SPF,
    'spec completion speculative.p_min=1.5 [spec-draft]': _SPBAD,
    'spec completion stream [spec-md]': _MD,
    'spec v1/completions [spec-md]': _MD,
}
