"""The API's compatibility rules, enforced with buf (issue 25, item 6): `buf lint` (STANDARD +
COMMENTS, the exceptions justified in protos/buf.yaml) and `buf breaking` (WIRE_JSON) against
the released API in protos/release/, both run by protos/buf_check.py on protoc's image of the
current protos. buf comes from npm (tests/node, `scripts/setup.sh --test`): missing, these tests
fail rather than skip.

The breaking check is shown to bite: a deleted field, a renamed field and a changed type, each
made in a copy of the current descriptors, fail it with buf's rule named. RPCs added after the
release are held to the naming rules protos/buf.yaml waives for the released ones."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from google.protobuf import descriptor_pb2

REPO = Path(__file__).resolve().parent.parent


def _load_buf_check() -> ModuleType:
    # protos/ is a folder of scripts, not a package
    spec = importlib.util.spec_from_file_location("llama_buf_check",
                                                  REPO / "protos" / "buf_check.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


buf_check = _load_buf_check()
Mutation = Callable[[descriptor_pb2.FileDescriptorSet], None]


def _output(result: object) -> str:
    return f"{getattr(result, 'stdout', '')}{getattr(result, 'stderr', '')}"


def test_buf_is_installed() -> None:
    assert buf_check.buf_binary().is_file()  # BufMissing says how to install it


def test_lint_is_clean() -> None:
    result = buf_check.lint()
    assert result.returncode == 0, "buf lint:\n" + _output(result)


def test_no_breaking_change_since_the_release() -> None:
    assert buf_check.RELEASE_IMAGE.is_file()
    result = buf_check.breaking()
    assert result.returncode == 0, "buf breaking (WIRE_JSON):\n" + _output(result)


def _message(files: descriptor_pb2.FileDescriptorSet,
             name: str) -> descriptor_pb2.DescriptorProto:
    return next(m for f in files.file if f.package == "llama.v1" for m in f.message_type
                if m.name == name)


def _field(files: descriptor_pb2.FileDescriptorSet, message: str,
           name: str) -> descriptor_pb2.FieldDescriptorProto:
    return next(f for f in _message(files, message).field if f.name == name)


def _delete_field(files: descriptor_pb2.FileDescriptorSet) -> None:
    fields = _message(files, "TokenizeRequest").field
    del fields[[f.name for f in fields].index("with_pieces")]


def _rename_field(files: descriptor_pb2.FileDescriptorSet) -> None:
    field = _field(files, "TokenizeRequest", "with_pieces")
    field.name, field.json_name = "pieces", "pieces"


def _change_type(files: descriptor_pb2.FileDescriptorSet) -> None:
    field = _field(files, "TokenizeRequest", "with_pieces")
    field.type = descriptor_pb2.FieldDescriptorProto.TYPE_STRING


@pytest.mark.parametrize(("mutate", "rule"), [
    (_delete_field, "FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED"),
    (_rename_field, "FIELD_SAME_JSON_NAME"),
    (_change_type, "FIELD_WIRE_JSON_COMPATIBLE_TYPE"),
], ids=["delete", "rename", "retype"])
def test_breaking_check_catches(tmp_path: Path, mutate: Mutation, rule: str) -> None:
    image = tmp_path / "current.pb"
    buf_check.build_descriptor_set(buf_check.PROTOS, image)
    files = descriptor_pb2.FileDescriptorSet.FromString(image.read_bytes())
    mutate(files)
    image.write_bytes(files.SerializeToString())
    result = buf_check.breaking_image(image, error_format="json")
    rules = {json.loads(line)["type"] for line in result.stdout.splitlines() if line.strip()}
    assert result.returncode != 0 and rule in rules, _output(result)


def _methods(path: Path) -> dict[str, descriptor_pb2.MethodDescriptorProto]:
    # a buf image parses as a FileDescriptorSet (its own additions are unknown fields)
    files = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    return {m.name: m for f in files.file if f.package == "llama.v1"
            for s in f.service for m in s.method}


# RPCs added since the release that may break the naming rules anyway: RPC name -> why. An
# entry needs a reason as good as protos/buf.yaml's for the released names.
_PIPE = ("ExportSlot streams the SlotStateChunk messages ImportSlot takes, so that an export "
         "pipes into an import on another server unchanged (3ad1f7e, issue 19)")
NEW_RPC_NAME_EXCEPTIONS: dict[str, str] = {"ExportSlot": _PIPE, "ImportSlot": _PIPE}


def test_rpcs_added_since_the_release_follow_the_standard_names(tmp_path: Path) -> None:
    image = tmp_path / "current.pb"
    buf_check.build_descriptor_set(buf_check.PROTOS, image)
    current, released = _methods(image), _methods(buf_check.RELEASE_IMAGE)
    assert released.keys() <= current.keys(), "a released RPC is gone"
    types = [t for m in current.values() for t in (m.input_type, m.output_type)]
    wrong = []
    for name in sorted(current.keys() - released.keys() - NEW_RPC_NAME_EXCEPTIONS.keys()):
        method = current[name]
        names = (method.input_type, method.output_type)
        if (names != (f".llama.v1.{name}Request", f".llama.v1.{name}Response")
                or types.count(method.input_type) + types.count(method.output_type) != 2):
            wrong.append(f"{name}({method.input_type}) -> {method.output_type}")
    assert not wrong, (
        "RPCs added since the release take <Rpc>Request and return <Rpc>Response, each used by "
        "that RPC only (buf's STANDARD rules, which protos/buf.yaml waives for released names; "
        f"or justify an entry in NEW_RPC_NAME_EXCEPTIONS): {wrong}")
