"""An honest surface (issue 15, item 8): every RPC of llama.v1.LlamaServer and every request
field the served RPCs take is either served, or listed here as not served yet, and docs/api.md
("Not served yet") lists exactly what is listed here.

Both lists only shrink: an RPC or field listed here that the service starts to serve fails the
test until it is taken off the list (and off docs/api.md).

A request field counts as read when its name appears in the service's request-handling code
(service/ without the command-line modules) as an attribute access (`req.name`), as a string
given to HasField / WhichOneof / getattr / ... (`_FIELD_NAME_CALLS`), or as an element of a
tuple, list or set literal (name lists such as `_COMPLETION_FIELDS`; not in a `NOT_YET...`
list, which declares fields not read), read with `ast`; the field names of SamplingParams and
CompletionParams count too, since requests are read into them by name. A field refused with a
clear message is read in this sense (e.g. `echo`). A name can match by coincidence (`req.model`
vs `rt.model`): fields ignored although their name appears are listed in IGNORED_THOUGH_NAMED,
which the test can only keep honest one way (a field there whose name no longer appears must
move to NOT_YET_SERVED_FIELDS).
"""

from __future__ import annotations

import ast
import dataclasses
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from grpc_harness import ServiceProcess, running_service
from llama.v1 import service_pb2, service_pb2_grpc

from service.engine.params import CompletionParams, SamplingParams
from service.servicer import LlamaServicer

REPO = Path(__file__).resolve().parent.parent
SERVICE = service_pb2.DESCRIPTOR.services_by_name["LlamaServer"]

# RPCs the service does not serve yet: the generated base class answers them UNIMPLEMENTED.
NOT_YET_SERVED: dict[str, str] = {
}

# Request fields the service does not read yet, by message: what they would do, and what
# serves them. Every one parses (a request with it is not refused) and has no effect.
_GENERATION = {
    "stream_options": "REST bridge only (include_usage); gRPC streams always carry usage",
    "response_fields": "REST bridge only: gRPC responses keep every field (issue 20)",
    "verbose": "no __verbose details yet, on gRPC or REST (issue 16)",
}
NOT_YET_SERVED_FIELDS: dict[str, dict[str, str]] = {
    "CompletionRequest": {
        **_GENERATION,
    },
    "ChatCompletionRequest": {
        **_GENERATION,
        "reasoning_effort": "only --reasoning-effort / chat_template_kwargs reach the template",
    },
    "JsonSchemaFormat": {"strict": "OpenAI's strict flag: the schema is always enforced"},
}

# Ignored too, although their name appears in the service's code for something else.
IGNORED_THOUGH_NAMED: dict[str, dict[str, str]] = {
    "CompletionRequest": {
        "model": "one model: selects nothing, responses carry the server's model name",
        "user": "OpenAI's end-user id, ignored as llama-server ignores it",
    },
    "ChatCompletionRequest": {
        "model": "one model: selects nothing, responses carry the server's model name",
        "user": "OpenAI's end-user id, ignored as llama-server ignores it",
    },
    "ControlChatCompletionRequest": {
        "model": "llama-server's router mode picks the model by it; one model here",
    },
}

# Messages the service reads whole: servicer._render_chat turns each chat message and tool into
# a dict (json_format.MessageToDict) for the chat template code, which renders or refuses every
# key (e.g. an image_url part: "unsupported content part type").
WHOLE_MESSAGES = frozenset({
    "ChatMessage", "ContentPartList", "ContentPart", "ImageUrl", "InputAudio", "InputMedia",
    "ToolCall", "FunctionCall", "Tool", "FunctionDefinition",
})

# Modules that read the command line, not requests (their names are flag settings).
_COMMAND_LINE = ("service/cli_flags/", "service/config.py", "service/config_derive.py",
                 "service/cli.py")
# Calls whose string arguments name message fields.
_FIELD_NAME_CALLS = frozenset({"HasField", "WhichOneof", "ClearField", "getattr", "hasattr",
                               "setattr", "value_to_json", "schema_of"})


# -- RPCs -------------------------------------------------------------------------------------
def served_rpcs() -> set[str]:
    """RPCs LlamaServicer overrides; the generated base class answers the others UNIMPLEMENTED."""
    base = service_pb2_grpc.LlamaServerServicer
    return {m.name for m in SERVICE.methods
            if getattr(LlamaServicer, m.name) is not getattr(base, m.name)}


def test_every_rpc_is_served_or_listed_as_not_yet_served() -> None:
    rpcs = {m.name for m in SERVICE.methods}
    served = served_rpcs()
    assert not NOT_YET_SERVED.keys() - rpcs, "listed RPCs missing from the proto"
    assert not rpcs - served - NOT_YET_SERVED.keys(), (
        "RPCs neither served by LlamaServicer nor listed in NOT_YET_SERVED (and docs/api.md)")
    assert not served & NOT_YET_SERVED.keys(), (
        "served now: take them off NOT_YET_SERVED and off docs/api.md's 'Not served yet'")


def _answers_unimplemented(svc: ServiceProcess, name: str) -> None:
    method = SERVICE.methods_by_name[name]
    request = message_factory.GetMessageClass(method.input_type)()
    call = getattr(svc.stub(), name)
    with pytest.raises(grpc.RpcError) as info:
        response = call(request, timeout=30)
        if method.server_streaming:
            list(response)
    err: Any = info.value
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED, err.details()
    assert err.details(), "UNIMPLEMENTED without a message"


def test_unserved_rpcs_answer_unimplemented(tiny_bpe_path: Path) -> None:
    # Every RPC is served today (NOT_YET_SERVED is empty, so there is nothing to start a
    # server for); an RPC listed there later must answer UNIMPLEMENTED with a message.
    if not NOT_YET_SERVED:
        assert served_rpcs() == {m.name for m in SERVICE.methods}
        return
    with running_service(tiny_bpe_path) as svc:
        for name in sorted(NOT_YET_SERVED):
            _answers_unimplemented(svc, name)


# -- request fields ---------------------------------------------------------------------------
@cache
def names_read() -> dict[str, str]:
    """Each field name the service's request-handling code reads, with one place it does."""
    found: dict[str, str] = {}
    for path in sorted((REPO / "service").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith(_COMMAND_LINE):
            continue
        tree = ast.parse(path.read_text(), rel)
        declared = {id(n) for a in ast.walk(tree) if _declares_not_yet(a) for n in ast.walk(a)}
        for node in ast.walk(tree):
            if id(node) not in declared:
                for name in _field_names(node):
                    found.setdefault(name, f"{rel}:{getattr(node, 'lineno', '?')}")
    for params in (SamplingParams, CompletionParams):
        for f in dataclasses.fields(params):
            found.setdefault(f.name, f"{params.__name__}.{f.name}")
    return found


def _declares_not_yet(node: ast.AST) -> bool:
    """`NOT_YET... = (...)`: the service's own list of fields it does not read yet."""
    targets = node.targets if isinstance(node, ast.Assign) else (
        [node.target] if isinstance(node, ast.AnnAssign) else [])
    return any(isinstance(t, ast.Name) and "NOT_YET" in t.id for t in targets)


def _field_names(node: ast.AST) -> Iterator[str]:
    if isinstance(node, ast.Attribute):
        yield node.attr
    elif isinstance(node, ast.Call):
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if called in _FIELD_NAME_CALLS:
            yield from _strings(node.args)
    elif isinstance(node, ast.Tuple | ast.List | ast.Set):
        yield from _strings(node.elts)


def _strings(nodes: list[ast.expr]) -> Iterator[str]:
    for n in nodes:
        if isinstance(n, ast.Constant) and isinstance(n.value, str):
            yield n.value


def request_fields() -> Iterator[tuple[Descriptor, FieldDescriptor]]:
    """The fields of the served RPCs' requests and of the llama.v1 messages they hold (through
    fields that are read: an ignored field's message is ignored whole)."""
    served = served_rpcs()
    todo = [m.input_type for m in SERVICE.methods if m.name in served]
    seen: set[str] = set()
    while todo:
        msg = todo.pop()
        if msg.full_name in seen or not msg.full_name.startswith("llama.v1."):
            continue
        seen.add(msg.full_name)
        for field in msg.fields:
            yield msg, field
            if field.message_type is not None and _is_read(msg, field) and not _listed(
                    IGNORED_THOUGH_NAMED, msg, field):
                todo.append(field.message_type)


def _is_read(msg: Descriptor, field: FieldDescriptor) -> bool:
    return msg.name in WHOLE_MESSAGES or field.name in names_read()


def _listed(table: dict[str, dict[str, str]], msg: Descriptor, field: FieldDescriptor) -> bool:
    return field.name in table.get(msg.name, {})


def test_every_request_field_is_read_or_listed_as_not_yet_served() -> None:
    problems = []
    reached: set[tuple[str, str]] = set()
    for msg, field in request_fields():
        reached.add((msg.name, field.name))
        where = f"{msg.name}.{field.name}"
        read, not_yet = _is_read(msg, field), _listed(NOT_YET_SERVED_FIELDS, msg, field)
        if not read and not not_yet:
            problems.append(f"{where}: neither read by the service nor in NOT_YET_SERVED_FIELDS"
                            + (" (move it there)" if _listed(IGNORED_THOUGH_NAMED, msg, field)
                               else ""))
        elif read and not_yet:
            problems.append(f"{where}: read now ({names_read().get(field.name, msg.name)}): "
                            "take it off NOT_YET_SERVED_FIELDS and docs/api.md, or, if that "
                            "is a coincidence of names, move it to IGNORED_THOUGH_NAMED")
    listed = _pairs(NOT_YET_SERVED_FIELDS) | _pairs(IGNORED_THOUGH_NAMED)
    problems += [f"{m}.{f}: listed, but no served request has it" for m, f in listed - reached]
    assert not problems, "\n".join(problems)


def test_listed_field_lists_do_not_overlap() -> None:
    assert not _pairs(NOT_YET_SERVED_FIELDS) & _pairs(IGNORED_THOUGH_NAMED)


def _pairs(table: dict[str, dict[str, str]]) -> set[tuple[str, str]]:
    return {(msg, field) for msg, fields in table.items() for field in fields}


# -- docs -------------------------------------------------------------------------------------
def _not_served_section() -> str:
    text = (REPO / "docs" / "api.md").read_text()
    match = re.search(r"^## Not served yet\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, "docs/api.md has no '## Not served yet' section"
    return match.group(1)


def test_docs_list_exactly_the_unserved_rpcs() -> None:
    heads = re.findall(r"^- ([^:]*):", _not_served_section(), re.M)  # "- `A`, `B`: what"
    documented = {name for head in heads for name in re.findall(r"`(\w+)`", head)}
    assert documented == NOT_YET_SERVED.keys()


def test_docs_list_exactly_the_fields_with_no_effect() -> None:
    documented: set[tuple[str, str]] = set()
    for fields, messages in re.findall(r"^\| (`[^|]+`) \| (`[^|]+`) \|", _not_served_section(),
                                       re.M):
        documented |= {(m, f) for m in re.findall(r"`(\w+)`", messages)
                       for f in re.findall(r"`(\w+)`", fields)}
    assert documented == _pairs(NOT_YET_SERVED_FIELDS) | _pairs(IGNORED_THOUGH_NAMED)
