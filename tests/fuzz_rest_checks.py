"""What every answer of the REST bridge must be under fuzzing (tests/test_fuzz_rest.py): no 5xx
but the documented 501 and 503, every 4xx and those two in llama-server's error shape
{"error": {"code", "message", "type"}} with the code the status, and the server healthy after
a campaign (GET /health 200, GET /load with nothing processing or waiting)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

ALLOWED_5XX = frozenset({501, 503})


@dataclass
class Tally:
    """Requests sent and statuses seen, per operation; the failures, described."""

    sent: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def record(self, label: str, status: int, body: bytes, content_type: str) -> None:
        self.sent += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        problem = answer_problem(status, body, content_type)
        if problem is not None and len(self.failures) < 50:
            self.failures.append(f"{label}: {status} {problem}: {body[:300]!r}")


def answer_problem(status: int, body: bytes, content_type: str) -> str | None:
    """Why this answer breaks the contract, or None."""
    if status >= 500 and status not in ALLOWED_5XX:
        return "is a server error"
    if status < 400:
        return None
    if "json" not in content_type:
        return f"error body of type {content_type!r}, not JSON"
    try:
        payload: Any = json.loads(body)
    except ValueError:
        return "error body is not JSON"
    error = payload.get("error") if isinstance(payload, dict) else None
    if not (isinstance(error, dict) and isinstance(error.get("code"), int)
            and isinstance(error.get("message"), str) and isinstance(error.get("type"), str)):
        return "error body not in llama-server's shape"
    if error["code"] != status:
        return f"error code {error['code']} is not the status"
    return None


def assert_healthy(url: str, timeout: float = 60.0) -> dict[str, Any]:
    """GET /health answers 200 and GET /load shows no request running or waiting (cancelled
    ones may take a step to end: polled until `timeout`)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=url, timeout=30.0) as http:
        assert http.get("/health").status_code == 200
        while True:
            load = http.get("/load").json()
            if not load.get("n_processing") and not load.get("n_waiting"):
                return dict(load)
            assert time.monotonic() < deadline, f"requests still running: {load}"
            time.sleep(0.2)
