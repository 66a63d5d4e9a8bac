"""The typed alternatives of llama-server's loosely typed request fields (issue 25, item 3),
each read together with the field it stands for, so the rest of the service sees one value:

- `stop_sequences` for `stop` (both set: refused);
- `typed_logit_bias` for `logit_bias` (both set: refused), the same (token, bias) pairs;
- JSON text (`json_schema_json`, `schema_json`, `parameters_json`) over a Struct: json.loads
  keeps integers (a Struct holds every number as a double: `minimum: 1` became `1.0` in the
  chat template) and key order (the grammar orders properties by it);
- `typed_role` for a chat message's `role`, `action_type` for a slot action's `action` (both
  set: they must agree).
"""

from __future__ import annotations

import json
import math
from typing import Any

from google.protobuf import json_format
from llama.v1 import typed_pb2

from native import Vocab
from service.engine.params import ParamError
from service.prompt_values import value_to_json
from service.prompts import Json, parse_logit_bias, parse_stop

ROLES = {
    typed_pb2.ROLE_SYSTEM: "system",
    typed_pb2.ROLE_DEVELOPER: "developer",
    typed_pb2.ROLE_USER: "user",
    typed_pb2.ROLE_ASSISTANT: "assistant",
    typed_pb2.ROLE_TOOL: "tool",
}


def stop_of(req: Any) -> tuple[str, ...]:
    """The stop strings of `stop` or `stop_sequences`."""
    if req.stop_sequences:
        if req.HasField("stop"):
            raise ParamError("set either stop or stop_sequences, not both", field="stop_sequences")
        return tuple(req.stop_sequences)
    return parse_stop(value_to_json(req, "stop"))


def logit_bias_of(req: Any, vocab: Vocab) -> tuple[tuple[int, float], ...]:
    """(token, bias) pairs from `logit_bias` or `typed_logit_bias`; -inf bans. A later entry
    for the same token wins, as in llama-server's list form."""
    if not req.typed_logit_bias:
        return parse_logit_bias(value_to_json(req, "logit_bias"), vocab)
    if req.HasField("logit_bias"):
        raise ParamError("set either logit_bias or typed_logit_bias, not both",
                         field="typed_logit_bias")
    out: dict[int, float] = {}
    for i, entry in enumerate(req.typed_logit_bias):
        bias = _typed_bias(entry, i)
        for tok in _typed_tokens(entry, i, vocab):
            out[tok] = bias
    return tuple(out.items())


def _typed_bias(entry: Any, i: int) -> float:
    effect = entry.WhichOneof("effect")
    if effect == "ban":
        if not entry.ban:
            raise ParamError(f"typed_logit_bias[{i}]: ban must be true (to bias, set bias)",
                             field=f"typed_logit_bias[{i}].ban")
        return float("-inf")
    if effect != "bias":
        raise ParamError(f"typed_logit_bias[{i}]: set bias or ban", field=f"typed_logit_bias[{i}]")
    if not math.isfinite(entry.bias):
        raise ParamError(f"typed_logit_bias[{i}].bias must be a finite number (to ban the "
                         "token, set ban)", field=f"typed_logit_bias[{i}].bias")
    return float(entry.bias)


def _typed_tokens(entry: Any, i: int, vocab: Vocab) -> list[int]:
    target = entry.WhichOneof("target")
    if target == "text":
        return vocab.tokenize(entry.text, add_special=False, parse_special=False)
    if target != "token":
        raise ParamError(f"typed_logit_bias[{i}]: set token or text",
                         field=f"typed_logit_bias[{i}]")
    if not 0 <= entry.token < vocab.n_tokens:
        raise ParamError(f"typed_logit_bias[{i}].token: token id {entry.token} is outside "
                         f"the vocabulary (0..{vocab.n_tokens - 1})",
                         field=f"typed_logit_bias[{i}].token")
    return [entry.token]


def json_text(field: str, text: str) -> Json:
    """A JSON-text field parsed (ParamError naming `field` when it is not JSON)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ParamError(f"{field} is nested too deeply to parse", field=field) from None
    except ValueError as e:  # json.JSONDecodeError, and invalid UTF-8 surrogates
        raise ParamError(f"{field} is not valid JSON: {e}", field=field) from None


def schema_of(msg: Any, text_field: str, struct_field: str) -> Json:
    """A JSON schema given as JSON text (`text_field`, which wins) or as a Struct; None when
    neither is set. The text must hold a JSON object."""
    if msg.HasField(text_field):
        schema = json_text(text_field, getattr(msg, text_field))
        if not isinstance(schema, dict):
            raise ParamError(f"{text_field} must hold a JSON object (a JSON schema)",
                             field=text_field)
        return schema
    if msg.HasField(struct_field):
        return json_format.MessageToDict(getattr(msg, struct_field))
    return None


def role_of(message: Any) -> str:
    """A chat message's role from `role` or `typed_role` (ParamError if they disagree)."""
    if not message.typed_role:
        return str(message.role)
    role = ROLES.get(message.typed_role)
    if role is None:
        raise ParamError(f"typed_role: unknown value {message.typed_role}", field="typed_role")
    if message.role and message.role != role:
        raise ParamError(f"a message's role {message.role!r} and typed_role "
                         f"{typed_pb2.Role.Name(message.typed_role)} disagree",
                         field="typed_role")
    return role


SLOT_ACTIONS = {
    typed_pb2.SLOT_ACTION_TYPE_SAVE: "save",
    typed_pb2.SLOT_ACTION_TYPE_RESTORE: "restore",
    typed_pb2.SLOT_ACTION_TYPE_ERASE: "erase",
}


def slot_action_of(request: Any) -> str:
    """A SlotActionRequest's action from `action` or `action_type` (ParamError if they
    disagree; "" when neither is set: the caller refuses that as llama-server does)."""
    if not request.action_type:
        return str(request.action)
    action = SLOT_ACTIONS.get(request.action_type)
    if action is None:
        raise ParamError(f"action_type: unknown value {request.action_type}",
                         field="action_type")
    if request.action and request.action != action:
        raise ParamError(f"action {request.action!r} and action_type "
                         f"{typed_pb2.SlotActionType.Name(request.action_type)} disagree",
                         field="action_type")
    return action


def tool_json(tool: Any) -> dict[str, Json]:
    """One request tool as OpenAI JSON, its parameters from parameters_json when set."""
    out: dict[str, Json] = json_format.MessageToDict(tool, preserving_proto_field_name=True)
    function = out.get("function")
    if isinstance(function, dict):
        function.pop("parameters_json", None)
        parameters = schema_of(tool.function, "parameters_json", "parameters")
        if parameters is not None:
            function["parameters"] = parameters
    return out
