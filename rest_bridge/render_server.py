"""llama-server's JSON for the server routes (/props, /slots, /v1/models) from the llama.v1
messages, and the bare arrays the gRPC API wraps in a field unwrapped.

Pure (no web framework): the bridge's routes (routes_server) and the service's HTTP-body RPCs
(service/rpc_http.py, through Envoy) both answer with these."""

from __future__ import annotations

from typing import Any

from rest_bridge.jsonio import Json, integral, message_json, settings_json

# Settings llama-server leaves out of /slots' and /props' params (task_params::to_json's
# only_metrics form): the sampling inputs that are not numbers.
_NOT_METRICS = frozenset({"stop", "logit_bias", "grammar", "grammar_lazy", "grammar_triggers",
                          "preserved_tokens", "dry_sequence_breakers"})


def metrics_params(params: Any) -> dict[str, Json]:
    return {k: v for k, v in settings_json(params).items() if k not in _NOT_METRICS}


# The pinned llama-server's /slots element (server_slot::to_json, LLAMA_SERVER_SLOTS_DEBUG
# unset): these four for a slot never used (id_task -1), the rest once it has run a task.
_SLOT_ALWAYS = ("id", "n_ctx", "speculative", "is_processing")
_SLOT_TASK = ("id_task", "n_prompt_tokens", "n_prompt_tokens_processed", "n_prompt_tokens_cache")
_NEXT_TOKEN = ("has_next_token", "has_new_line", "n_remain", "n_decoded")


def slot_json(slot: Any) -> dict[str, Json]:
    out: dict[str, Json] = {k: getattr(slot, k) for k in _SLOT_ALWAYS}
    if slot.id_task == -1:
        return out
    out.update((k, getattr(slot, k)) for k in _SLOT_TASK)
    out["params"] = metrics_params(slot.params)
    # a one-element array in the pinned build (the spec's example shows an object)
    out["next_token"] = [{k: getattr(slot.next_token, k) for k in _NEXT_TOKEN}]
    return out


def slots_json(resp: Any) -> list[Json]:
    """GET /slots: a bare array."""
    return [slot_json(s) for s in resp.slots]


def props_json(resp: Any, webui: bool) -> dict[str, Json]:
    """GET /props; `webui`: whether this front door serves the web page (`ui`)."""
    out = message_json(resp)
    if resp.HasField("default_generation_settings"):
        # llama-server's /props has the defaults' params and the slot context only (the rest
        # of a slot is in GetProps' SlotInfo, and in /slots).
        dgs = resp.default_generation_settings
        out["default_generation_settings"] = {"params": metrics_params(dgs.params),
                                              "n_ctx": dgs.n_ctx}
    if "chat_template_caps" in out:
        # a proto map: its order is whatever each process's hash table gives; sorted, both
        # front doors write the same bytes every time
        out["chat_template_caps"] = dict(sorted(out["chat_template_caps"].items()))
    # What the front door itself serves: its web page or none, no CORS proxy.
    out["ui"] = webui
    out["ui_settings"] = {}
    out["cors_proxy_enabled"] = False
    return out


def models_json(resp: Any) -> dict[str, Json]:
    """GET /v1/models and /models (message_json writes `models` before `data`; order is
    free)."""
    out = message_json(resp)
    for model in out.get("data", []):
        if "meta" in model:
            integral(model["meta"], "n_params", "size")
    return out


def control_json(resp: Any) -> dict[str, Json]:
    """POST /v1/chat/completions/control: `success`, and llama-server's reason when not."""
    body: dict[str, Json] = {"success": resp.success}
    if resp.HasField("message"):
        body["message"] = resp.message
    return body


def slot_action_json(resp: Any) -> dict[str, Json]:
    """POST /slots/{id_slot}'s answer (byte counts as integers, as llama-server writes them)."""
    return integral(message_json(resp), "n_written", "n_read")


def import_slot_json(resp: Any) -> dict[str, Json]:
    """POST /slots/import's answer."""
    return integral(message_json(resp), "n_read")


def export_headers(id_slot: int, total_bytes: int) -> dict[str, str]:
    """GET /slots/{id_slot}/export's headers besides its type: `curl -OJ` names the file."""
    return {"content-length": str(total_bytes),
            "content-disposition": f'attachment; filename="slot-{id_slot}.bin"'}
