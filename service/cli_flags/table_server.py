"""Flag table, part 3: chat templates, network and security, endpoints, logging.

--grpc-port and --drain-timeout are ours (llama-server has no gRPC and no graceful drain);
everything else keeps llama-server's spelling.
"""

from __future__ import annotations

from service.cli_flags import values as v
from service.cli_flags.spec import FlagSpec, implemented, planned

CHAT = "Chat templates and reasoning"
NETWORK = "Network and security"
ENDPOINTS = "Endpoints and server behaviour"
LOGGING = "Logging"

# -v/--verbose: "log everything"; any threshold above debug (5) does that.
VERBOSITY_ALL = 1000

SERVER_FLAGS: tuple[FlagSpec, ...] = (
    planned(
        ("--jinja",), "use_jinja", CHAT, "whether to use the Jinja template engine for chat",
        "chat templates are always rendered with Jinja; llama-server's built-in non-Jinja "
        "formatting is not implemented",
        negative=("--no-jinja",), env=("LLAMA_ARG_JINJA",), default=True, honoured_values=(True,),
    ),
    implemented(
        ("--chat-template",), "chat_template", CHAT,
        "custom chat template: a built-in template name or Jinja source "
        "(default: the model's template)",
        metavar="JINJA_TEMPLATE", env=("LLAMA_ARG_CHAT_TEMPLATE",), default=None,
        default_text="from model",
    ),
    implemented(
        ("--chat-template-file",), "chat_template", CHAT, "read the chat template from a file",
        metavar="JINJA_TEMPLATE_FILE", env=("LLAMA_ARG_CHAT_TEMPLATE_FILE",),
        convert=v.read_text_file, default=None, default_text="from model",
    ),
    implemented(
        ("--chat-template-kwargs",), "chat_template_kwargs", CHAT,
        "extra template variables as a JSON object, e.g. '{\"key1\":\"value1\"}'",
        metavar="STRING", env=("LLAMA_ARG_CHAT_TEMPLATE_KWARGS",), convert=v.parse_json_object,
        default=None, default_text="none",
    ),
    implemented(
        ("--reasoning-format",), "reasoning_format", CHAT,
        "how thoughts are returned: none (in content), auto or deepseek (a leading <think> "
        "block in reasoning_content), deepseek-legacy (in both)",
        metavar="FORMAT", env=("LLAMA_ARG_THINK",),
        convert=v.choice("none", "auto", "deepseek", "deepseek-legacy"), default="auto",
    ),
    implemented(
        ("-rea", "--reasoning"), "reasoning", CHAT,
        "use reasoning/thinking in chat: on, off or auto (detect from template)",
        metavar="[on|off|auto]", optional_value=True, const="on", env=("LLAMA_ARG_REASONING",),
        convert=v.parse_on_off_auto, default="auto",
    ),
    implemented(
        ("--reasoning-effort",), "reasoning_effort", CHAT,
        "reasoning effort given to the template ('default' keeps the template's)",
        metavar="LEVEL", env=("LLAMA_ARG_REASONING_EFFORT",), default="default",
    ),
    implemented(
        ("--reasoning-budget",), "reasoning_budget", CHAT,
        "token budget for thinking (-1 = unrestricted, 0 = end immediately): after N tokens "
        "of thinking the end-of-thinking tag is forced and the answer goes on (not beside a "
        "grammar: grammar, json_schema, a tool-call grammar)",
        metavar="N", env=("LLAMA_ARG_THINK_BUDGET",), convert=v.parse_int, default=-1,
        minimum=-1,
    ),
    implemented(
        ("--reasoning-budget-message",), "reasoning_budget_message", CHAT,
        "message injected before the end-of-thinking tag when the budget is exhausted",
        metavar="MESSAGE", env=("LLAMA_ARG_THINK_BUDGET_MESSAGE",), default=None,
        default_text="none",
    ),
    implemented(
        ("--reasoning-preserve",), "reasoning_preserve", CHAT,
        "preserve reasoning in the whole history, not only the last assistant message",
        negative=("--no-reasoning-preserve",), env=("LLAMA_ARG_REASONING_PRESERVE",),
        default=None, default_text="template default",
    ),
    implemented(
        ("--skip-chat-parsing",), "skip_chat_parsing", CHAT,
        "return everything (reasoning, tool calls) as plain content",
        negative=("--no-skip-chat-parsing",), env=("LLAMA_ARG_SKIP_CHAT_PARSING",),
        default=False,
    ),
    implemented(
        ("--prefill-assistant",), "prefill_assistant", CHAT,
        "whether a trailing assistant message is continued (prefilled) rather than closed",
        negative=("--no-prefill-assistant",), env=("LLAMA_ARG_PREFILL_ASSISTANT",),
        default=True,
    ),
    implemented(
        ("--host",), "hosts", NETWORK,
        "addresses to listen on, comma-separated: gRPC (--grpc-port) and HTTP (--port) on each; "
        "a path ending in .sock is a UNIX socket for HTTP only",
        metavar="HOST", env=("LLAMA_ARG_HOST",), convert=v.parse_host_list,
        default=("127.0.0.1",), default_text="127.0.0.1",
    ),
    implemented(
        ("--port",), "port", NETWORK, "HTTP (REST) port to listen on",
        metavar="PORT", env=("LLAMA_ARG_PORT",), convert=v.parse_int, default=8080,
        minimum=0, maximum=65535,
    ),
    implemented(
        ("--grpc-port",), "grpc_port", NETWORK,
        "gRPC port to listen on (llama-grpc-server only)",
        metavar="PORT", env=("LLAMA_ARG_GRPC_PORT",), convert=v.parse_int, default=50051,
        minimum=0, maximum=65535,
    ),
    implemented(
        ("--api-prefix",), "api_prefix", NETWORK,
        "path prefix the HTTP API is served under, without trailing slash",
        metavar="PREFIX", env=("LLAMA_ARG_API_PREFIX",), default="", default_text="none",
    ),
    implemented(
        ("--api-key",), "api_keys", NETWORK,
        "API keys for authentication, comma-separated",
        metavar="KEY", env=("LLAMA_API_KEY",), convert=v.parse_csv, repeat=True, default=(),
        default_text="none",
    ),
    implemented(
        ("--api-key-file",), "api_key_file_keys", NETWORK,
        "file of API keys, one per line ('#' starts a comment line)",
        metavar="FNAME", env=("LLAMA_ARG_API_KEY_FILE",), convert=v.read_api_key_file,
        repeat=True, default=(), default_text="none",
    ),
    implemented(
        ("--ssl-key-file",), "ssl_key_file", NETWORK, "PEM-encoded TLS private key",
        metavar="FNAME", env=("LLAMA_ARG_SSL_KEY_FILE",), convert=v.parse_existing_file,
        default=None, default_text="none",
    ),
    implemented(
        ("--ssl-cert-file",), "ssl_cert_file", NETWORK, "PEM-encoded TLS certificate",
        metavar="FNAME", env=("LLAMA_ARG_SSL_CERT_FILE",), convert=v.parse_existing_file,
        default=None, default_text="none",
    ),
    planned(
        ("-to", "--timeout"), "timeout", NETWORK, "server read/write timeout in seconds",
        "neither the gRPC service nor the REST bridge enforces a read/write timeout yet",
        metavar="N", env=("LLAMA_ARG_TIMEOUT",), convert=v.parse_int, default=3600, minimum=0,
    ),
    implemented(
        ("--drain-timeout",), "drain_timeout", NETWORK,
        "on SIGTERM/SIGINT, seconds that running requests get to finish while new ones are "
        "refused with UNAVAILABLE (llama-grpc-server only)",
        metavar="N", env=("LLAMA_ARG_DRAIN_TIMEOUT",), convert=v.parse_float, default=30.0,
        minimum=0.0,
    ),
    implemented(
        ("--sse-ping-interval",), "sse_ping_interval", NETWORK,
        "SSE keep-alive ping interval in seconds (-1 = disabled)",
        metavar="N", env=("LLAMA_ARG_SSE_PING_INTERVAL",), convert=v.parse_int, default=30,
        minimum=-1,
    ),
    implemented(
        ("--cors-origins",), "cors_origins", NETWORK,
        "allowed CORS origins, comma-separated ('localhost' reflects local origins only)",
        metavar="ORIGINS", env=("LLAMA_ARG_CORS_ORIGINS",), default="*",
    ),
    implemented(
        ("--cors-methods",), "cors_methods", NETWORK, "allowed CORS methods, comma-separated",
        metavar="METHODS", env=("LLAMA_ARG_CORS_METHODS",), default="GET, POST, DELETE, OPTIONS",
    ),
    implemented(
        ("--cors-headers",), "cors_headers", NETWORK, "allowed CORS headers, comma-separated",
        metavar="HEADERS", env=("LLAMA_ARG_CORS_HEADERS",), default="*",
    ),
    implemented(
        ("--cors-credentials",), "cors_credentials", NETWORK,
        "whether CORS allows credentials", negative=("--no-cors-credentials",),
        env=("LLAMA_ARG_CORS_CREDENTIALS",), default=True,
    ),
    implemented(
        ("--metrics",), "metrics", ENDPOINTS,
        "enable the Prometheus metrics endpoint (GetMetrics, GET /metrics)",
        env=("LLAMA_ARG_ENDPOINT_METRICS",), default=False,
    ),
    implemented(
        ("--slots",), "slots", ENDPOINTS,
        "expose the slots monitoring endpoint (ListSlots, GET /slots)",
        negative=("--no-slots",), env=("LLAMA_ARG_ENDPOINT_SLOTS",), default=True,
    ),
    implemented(
        ("--props",), "props", ENDPOINTS,
        "allow POST /props (SetProps; no property can be changed yet, as llama-server)",
        env=("LLAMA_ARG_ENDPOINT_PROPS",), default=False,
    ),
    implemented(
        ("--slot-save-path",), "slot_save_path", ENDPOINTS,
        "directory for saved slot KV caches (enables POST /slots/{id}?action=save|restore|erase)",
        metavar="PATH", convert=v.parse_directory, default=None, default_text="disabled",
    ),
    implemented(
        ("-sps", "--slot-prompt-similarity"), "slot_prompt_similarity", ENDPOINTS,
        "how much a prompt must match a slot's prompt to reuse that slot (0.0 = disabled)",
        metavar="SIMILARITY", convert=v.parse_float, default=0.1, minimum=0.0, maximum=1.0,
    ),
    implemented(
        ("--max-queue",), "max_queue", ENDPOINTS,
        "requests that may wait for a slot or KV cells; one more is refused with "
        "RESOURCE_EXHAUSTED / HTTP 503 (0 = no limit, as llama-server; llama-grpc-server only)",
        metavar="N", env=("LLAMA_ARG_MAX_QUEUE",), convert=v.parse_int, default=0, minimum=0,
    ),
    implemented(
        ("--cache-prompt",), "cache_prompt", ENDPOINTS,
        "whether to reuse a slot's KV cache for a matching prompt prefix",
        negative=("--no-cache-prompt",), env=("LLAMA_ARG_CACHE_PROMPT",), default=True,
    ),
    implemented(
        ("-sp", "--special"), "special", ENDPOINTS, "output special tokens", default=False,
    ),
    implemented(
        ("--spm-infill",), "spm_infill", ENDPOINTS,
        "use the Suffix/Prefix/Middle pattern for infill (some models prefer it)",
        default=False,
    ),
    implemented(
        ("--embd-normalize",), "embd_normalize", ENDPOINTS,
        "default embedding normalisation (-1 none, 0 max abs int16, 1 taxicab, 2 euclidean, "
        ">2 p-norm)",
        metavar="N", convert=v.parse_int, default=2, minimum=-1,
    ),
    implemented(
        ("--log-disable",), "log_disable", LOGGING, "disable logging", default=False,
    ),
    implemented(
        ("--log-file",), "log_file", LOGGING, "also log to this file",
        metavar="FNAME", env=("LLAMA_ARG_LOG_FILE",), default=None, default_text="none",
    ),
    planned(
        ("--log-colors",), "log_colors", LOGGING,
        "coloured logging: on, off or auto (auto = when writing to a terminal)",
        "log lines are never coloured yet", honoured_values=("off",),
        metavar="[on|off|auto]", optional_value=True, const="on",
        env=("LLAMA_ARG_LOG_COLORS", "LLAMA_LOG_COLORS"), convert=v.parse_on_off_auto,
        default="auto",
    ),
    implemented(
        ("-v", "--verbose", "--log-verbose"), "verbosity", LOGGING, "log all messages",
        const=VERBOSITY_ALL, default=3, default_text="off",
    ),
    implemented(
        ("-lv", "--verbosity", "--log-verbosity"), "verbosity", LOGGING,
        "verbosity threshold: 0 generic, 1 error, 2 warning, 3 info, 4 trace, 5 debug",
        metavar="N", env=("LLAMA_ARG_LOG_VERBOSITY", "LLAMA_LOG_VERBOSITY"),
        convert=v.parse_int, default=3,
    ),
    implemented(
        ("--log-timestamps",), "log_timestamps", LOGGING, "timestamps in log messages",
        negative=("--no-log-timestamps",), env=("LLAMA_ARG_LOG_TIMESTAMPS", "LLAMA_LOG_TIMESTAMPS"),
        default=False,
    ),
    planned(
        ("--log-prefix",), "log_prefix", LOGGING, "level prefix in log messages",
        "log lines always begin with their level letter, as --log-prefix asks",
        negative=("--no-log-prefix",), env=("LLAMA_ARG_LOG_PREFIX", "LLAMA_LOG_PREFIX"),
        default=False, honoured_values=(True,),
    ),
)  # fmt: skip
