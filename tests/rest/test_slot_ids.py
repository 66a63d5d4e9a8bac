"""Units of the slot-id checks both front doors run (rest_bridge.input_checks): the bridge's
FastAPI routes used to validate `{id_slot}` as an int32 path parameter, and the words of its 400
came from pydantic. The check is now one pure function, used by the bridge's routes and by the
service's HTTP-body RPCs behind Envoy; these tests pin it to pydantic's verdicts and words, so
the bridge still says what it said, through either door."""

from __future__ import annotations

from typing import Annotated

import pydantic
import pytest

from rest_bridge.errors import BridgeError
from rest_bridge.input_checks import path_slot_id, query_slot_id

# What the route's parameter was: FastAPI's Path(ge=-(2**31), le=2**31 - 1) on an int.
_FASTAPI_SLOT_ID = pydantic.TypeAdapter(
    Annotated[int, pydantic.Field(ge=-(2**31), le=2**31 - 1)])

PATH_IDS = ["0", "7", "-1", "+3", " 5 ", "\t5\n", "00012", "1_000", "5.0", "5.000", "-5.0",
            "0.0", "2147483647", "-2147483648", "2147483648", "-2147483649", "2147483648.0",
            "10000000000000000000", "abc", "", " ", "1.5", "5.", ".5", "1__0", "_1", "1_",
            "- 5", "5e0", "0x10", "\u0663", "\uff11", "5.0.0", "1 2"]


def _fastapi_says(text: str) -> int | str:
    try:
        return int(_FASTAPI_SLOT_ID.validate_python(text))
    except pydantic.ValidationError as e:
        return f"path.id_slot: {e.errors()[0]['msg']}"


def _we_say(text: str) -> int | str:
    try:
        return path_slot_id(text)
    except BridgeError as e:
        assert (e.status, e.type) == (400, "invalid_request_error")
        return e.message


@pytest.mark.parametrize("text", PATH_IDS)
def test_a_path_slot_id_is_judged_and_worded_as_fastapi_did(text: str) -> None:
    assert _we_say(text) == _fastapi_says(text)


@pytest.mark.parametrize(("text", "expected"), [
    (None, 0), ("3", 3), (" 3 ", 3), ("-1", -1), ("x", "id_slot must be an integer"),
    ("", "id_slot must be an integer"), ("1.5", "id_slot must be an integer"),
    ("2147483648", "id_slot must be between -2147483648 and 2147483647"),
])
def test_the_import_query_slot_id(text: str | None, expected: int | str) -> None:
    try:
        got: int | str = query_slot_id(text)
    except BridgeError as e:
        assert e.status == 400
        got = e.message
    assert got == expected
