# ruff: noqa: E501  (data: one reason or observed difference per line)
"""Differences from llama-server that the harness knows of, by case name.

DELIBERATE: kept on purpose, each with its reason; docs/fidelity.md lists the same cases
(a test checks both lists agree). OPEN: differences not fixed yet; their cases are expected to
fail (strict xfail: one that starts to agree fails until it is taken off the list).
"""

from __future__ import annotations

DELIBERATE: dict[str, str] = {
    "/completion body bad utf8":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "/completion body empty body":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "/completion body malformed":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "/completion body nan":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "/completion body trailing garbage":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "/tokenize body array body":
        "a body that is not a JSON object is a 400 on every route; llama-server's /tokenize reads it as an empty request",
    "/tokenize body bad utf8":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "/tokenize body empty body":
        "an empty body is read as `{}` (no fields), as on every route; llama-server fails to parse it (500)",
    "/tokenize body malformed":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "/tokenize body nan":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "/tokenize body nested deep":
        "a body that is not a JSON object is a 400 on every route; llama-server's /tokenize reads it as an empty request",
    "/tokenize body null body":
        "a body that is not a JSON object is a 400 on every route; llama-server's /tokenize reads it as an empty request",
    "/tokenize body string body":
        "a body that is not a JSON object is a 400 on every route; llama-server's /tokenize reads it as an empty request",
    "/tokenize body trailing garbage":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "/v1/chat/completions body bad utf8":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "/v1/chat/completions body empty body":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "/v1/chat/completions body malformed":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "/v1/chat/completions body nan":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "/v1/chat/completions body trailing garbage":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "/v1/completions body bad utf8":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "/v1/completions body empty body":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "/v1/completions body malformed":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "/v1/completions body nan":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "/v1/completions body trailing garbage":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "GET /completion (wrong method)":
        "a route asked with the wrong method is 405 Method Not Allowed (HTTP's meaning); llama-server answers 404",
    "GET /tokenize (wrong method)":
        "a route asked with the wrong method is 405 Method Not Allowed (HTTP's meaning); llama-server answers 404",
    "GET /v1/chat/completions (wrong method)":
        "a route asked with the wrong method is 405 Method Not Allowed (HTTP's meaning); llama-server answers 404",
    "POST /lora-adapters bad id":
        "issue 19: an adapter id that does not exist is a 400 naming it; llama-server ignores it and answers success",
    "POST /props array [metrics-props]":
        "POST /props takes a JSON object (the spec); llama-server answers success to any body",
    "POST /props n_predict [metrics-props]":
        "issue 19: a property POST /props cannot change is a 400 naming it, nothing changed; llama-server answers success and changes nothing",
    "apply-template empty":
        "an empty conversation is a 400 (nothing to answer); llama-server renders the template's preamble alone",
    "auth GET /props bad key":
        "the spec documents GET /props as public (no API key check); the pinned build checks the key",
    "auth GET /props basic":
        "the spec documents GET /props as public (no API key check); the pinned build checks the key",
    "auth GET /props no key":
        "the spec documents GET /props as public (no API key check); the pinned build checks the key",
    "chat content image part":
        "issue 23: the media are checked before the projector: 'AAAA' is no image, a 400 naming the part; llama-server, without a projector, answers 500 server_error 'image input is not supported' before reading the data",
    "chat continue final reasoning_content":
        "continue_final_message \"reasoning_content\" with a template that has no thinking block is a 400 saying so; llama-server renders the conversation without the message (its text is dropped) and answers",
    "chat max_tokens 0":
        "0 generates nothing, as the spec describes n_predict 0; the pinned llama-server still generates one token",
    "chat messages missing role":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "chat messages no messages":
        "an empty conversation is a 400 (nothing to answer); llama-server renders the template's preamble alone",
    "chat messages unknown role":
        "a role the chat template cannot know is a 400 naming it; llama-server hands it to the template",
    "chat n 2":
        "our `usage` counts the prompt once and the completion tokens of every choice (OpenAI's meaning); llama-server's counts the first choice's completion tokens only",
    "chat n 2 stream usage":
        "a chat stream with include_usage sends one `usage` chunk, after every choice has finished, counted as the whole answer's (OpenAI's meaning); llama-server sends one per choice, each counting that choice",
    "chat tool_choice required":
        "tool_choice \"required\" forces a tool call (OpenAI's meaning), parsed into tool_calls; the pinned llama-server's Llama 3.x handling forces none and returns the model's text as content",
    "chat tools not list":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "completion both":
        "grammar and json_schema together is a 400; llama-server quietly uses the grammar although the spec says json_schema wins",
    "completion image_data":
        "issue 23: image_data is read as the spec documents it, never ignored: 'AAAA' is no image, a 400 naming it (valid images: 400 'Multimodal data provided, but model does not support multimodal requests.'); the pinned llama-server no longer reads image_data and answers",
    "completion json_schema":
        "`generation_settings.grammar` shows the grammar our JSON-schema converter wrote: other rule names and layout than llama.cpp's for the same language (the generated text is compared and agrees)",
    "completion json_schema string":
        "`generation_settings.grammar` shows the grammar our JSON-schema converter wrote: other rule names and layout than llama.cpp's for the same language (the generated text is compared and agrees)",
    "completion logit_bias bad shape":
        "a malformed logit_bias entry is a 400 naming the field; llama-server drops it silently",
    "completion logit_bias bad token":
        "a token id outside the vocabulary in logit_bias is a 400; llama-server drops it silently",
    "completion logit_bias string":
        "a logit_bias that is neither a list nor an object is a 400; llama-server ignores it",
    "completion lora unknown id":
        "issue 19: an adapter id that does not exist is a 400 naming it; llama-server ignores it",
    "completion n_predict=0":
        "0 generates nothing, as the spec describes n_predict 0; the pinned llama-server still generates one token",
    "detokenize bad id":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "detokenize negative":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "detokenize not list":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "detokenize strings":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "infill prompt not string":
        "llama-server sets its 400 for a non-string prompt but does not stop the request (it answers 200); we stop it",
    "props [chatml]":
        "the built-in chatml template is our own text (never copied), so `chat_template` differs; the prompts it renders are the same (the chat cases with --chat-template chatml agree)",
    "props [n-predict]":
        "`default_generation_settings` shows the `-n` that requests get by default; llama-server shows -1 there (it copies only the sampling defaults)",
    "slot save [metrics-props]":
        "our slot files carry a header (model fingerprint, format version) and the sequence's state as libllama writes it, so `n_written` differs",
    "slot save no name [metrics-props]":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "slot slot out of range [metrics-props]":
        "issue 19: a slot id out of range is a 400; llama-server answers 200 with n_erased 0",
    "tokenize content number":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "v1/completions best_of":
        "OpenAI fields we cannot honour are a 400 (llama-server's own OpenAI parser refuses them too, but its /v1/completions accepts and ignores them)",
    "v1/completions echo":
        "OpenAI fields we cannot honour are a 400 (llama-server's own OpenAI parser refuses them too, but its /v1/completions accepts and ignores them)",
    "v1/completions suffix":
        "OpenAI fields we cannot honour are a 400 (llama-server's own OpenAI parser refuses them too, but its /v1/completions accepts and ignores them)",
    "v1/completions two prompts":
        "our `usage` counts every prompt's tokens (OpenAI's meaning); llama-server's counts the first prompt's only",
}

OPEN: dict[str, str] = {
}

# the cases on the embedding, reranking, LoRA and speculative pairs (corpus_models.py)
from .deliberate_models import MODEL_DELIBERATE  # noqa: E402

DELIBERATE.update(MODEL_DELIBERATE)
