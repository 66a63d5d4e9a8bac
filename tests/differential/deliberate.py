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
    "/v1/chat/completions body nan":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "/v1/completions body bad utf8":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "/v1/completions body empty body":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "/v1/completions body malformed":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "/v1/completions body nan":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "POST /lora-adapters bad id":
        "issue 19: an adapter id that does not exist is a 400 naming it; llama-server ignores it and answers success",
    "POST /props array [metrics-props]":
        "POST /props takes a JSON object (the spec); llama-server answers success to any body",
    "auth GET /props bad key":
        "the spec documents GET /props as public (no API key check); the pinned build checks the key",
    "auth GET /props basic":
        "the spec documents GET /props as public (no API key check); the pinned build checks the key",
    "auth GET /props no key":
        "the spec documents GET /props as public (no API key check); the pinned build checks the key",
    "chat content image part":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "chat messages missing role":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "chat tools not list":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "completion json_schema":
        "`generation_settings.grammar` shows the grammar our JSON-schema converter wrote: other rule names and layout than llama.cpp's for the same language (the generated text is compared and agrees)",
    "completion json_schema string":
        "`generation_settings.grammar` shows the grammar our JSON-schema converter wrote: other rule names and layout than llama.cpp's for the same language (the generated text is compared and agrees)",
    "completion lora unknown id":
        "issue 19: an adapter id that does not exist is a 400 naming it; llama-server ignores it",
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
    "slot save [metrics-props]":
        "our slot files carry a header (model fingerprint, format version) and the sequence's state as libllama writes it, so `n_written` differs",
    "slot save no name [metrics-props]":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "tokenize content number":
        "llama-server answers 500 server_error for this client error (its JSON library's exception); we answer 400 invalid_request_error",
    "v1/completions two prompts":
        "our `usage` counts every prompt's tokens (OpenAI's meaning); llama-server's counts the first prompt's only",
}

OPEN: dict[str, str] = {
    "completion samplers=[]":
        "$.generation_settings.samplers: 9 elements (llama-server: 0): an empty list is the default chain for us, no sampler (the dist draw alone) for llama-server",
    "/tokenize body nan":
        "status 200 (llama-server: 500)",
    "GET /completion (wrong method)":
        "status 405 (llama-server: 404)",
    "GET /slots":
        "$[0].prompt: extra (\"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\\n\\nEnvironment: ...)",
    "GET /slots?fail_on_no_slot=1":
        "$[0].prompt: extra (\"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\\n\\nEnvironment: ...)",
    "GET /tokenize (wrong method)":
        "status 405 (llama-server: 404)",
    "apply-template empty":
        "status 400 (llama-server: 200)",
    "auth GET /props good key":
        "$.media_marker: missing (llama-server: \"<__media_qey8Bukb2ELgmxcEcGpmPQvbp1A6qwud__>\")",
    "auth GET /props x-api-key":
        "$.media_marker: missing (llama-server: \"<__media_qey8Bukb2ELgmxcEcGpmPQvbp1A6qwud__>\")",
    "auth GET /slots good key":
        "$[0].prompt: extra (\"<|begin_of_text|>x\")",
    "auth GET /slots x-api-key":
        "$[0].prompt: extra (\"<|begin_of_text|>x\")",
    "chat max_tokens 0":
        "$.choices[0].message.content: \"\" (llama-server: \" JR\")",
    "chat messages assistant last":
        "$.choices[0].message.content: \"delay {}),\\noreferrer IDirect\" (llama-server: \"Hidelay {}),\\noreferrer IDirect\")",
    "chat messages message not object":
        "$.error.message: \"Failed to parse messages: missing 'role' in message: {}\" (llama-server: \"All non-assistant messages must contain 'content'\")",
    "chat messages no messages":
        "status 400 (llama-server: 200)",
    "chat messages unknown role":
        "status 400 (llama-server: 200)",
    "chat n 2":
        "status 400 (llama-server: 200)",
    "chat response_format json_object":
        "$.choices[0].finish_reason: \"length\" (llama-server: \"stop\")",
    "chat response_format json_schema":
        "$.choices[0].message.content: \"{\\\"a\\\":-61032683187229\" (llama-server: \"{\\\"\")",
    "chat tool_choice required":
        "$.choices[0].message.tool_calls: extra ([{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"arguments\": \"{\\\"ci...)",
    "completion both":
        "status 400 (llama-server: 200)",
    "completion context fills up":
        "$.content: \" \u0431\u043e\u0440\u043e\u0442\u044cremeremeremeremeremeremeremeremeremeremeremereme\" (llama-server: \" \u0431\u043e\u0440\u043e\u0442\u044cremeremeremeremeremeremeremeremeremeremereme\")",
    "completion logit_bias bad shape":
        "status 400 (llama-server: 200)",
    "completion logit_bias bad token":
        "status 400 (llama-server: 200)",
    "completion logit_bias string":
        "status 400 (llama-server: 200)",
    "completion n_predict=0":
        "$.content: \"\" (llama-server: \" glasses\")",
    "props [chatml]":
        "$.media_marker: missing (llama-server: \"<__media_ardLuLOZo6sYHkZxuOR2uXGGdtm8TADN__>\")",
    "props [default]":
        "$.media_marker: missing (llama-server: \"<__media_gAPsN48GCPgTr0jWS31py8929lmFO4J1__>\")",
    "props [fim]":
        "$.media_marker: missing (llama-server: \"<__media_4qW2H54QexCwxvMGc6MBB0pqdjowlbzD__>\")",
    "props [metrics-props]":
        "$.media_marker: missing (llama-server: \"<__media_C0kxzucRs7vKcStMCfGWoGCH1fHbwKLA__>\")",
    "props [n-predict]":
        "$.media_marker: missing (llama-server: \"<__media_urp2nkULJE3SMvGXfdn07FMgdPUKwbRv__>\")",
    "props [no-slots]":
        "$.media_marker: missing (llama-server: \"<__media_TgbxkKFSFEna325JVxHdkmhPVoVEQefK__>\")",
    "props [reasoning-none]":
        "$.media_marker: missing (llama-server: \"<__media_pMVB8nfzGoj2d96OKcP8fh6clP5fGUu6__>\")",
    "props [spm]":
        "$.media_marker: missing (llama-server: \"<__media_HCo3YsDjIAyA7PQhAiSDAyORUdIKsQF5__>\")",
    "tokenize content list":
        "status 400 (llama-server: 200)",
    "v1/completions best_of":
        "status 400 (llama-server: 200)",
    "v1/completions echo":
        "status 400 (llama-server: 200)",
    "v1/completions suffix":
        "status 400 (llama-server: 200)",
}
