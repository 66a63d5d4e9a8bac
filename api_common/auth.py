"""API-key comparison shared by the service's gRPC interceptor (service.auth) and the REST
bridge's middleware (rest_bridge.auth): both check `--api-key` keys, and both must do it in
constant time. It lives here so the bridge needs no part of the service package."""

from __future__ import annotations

import hmac
from collections.abc import Sequence


def key_matches(presented: str, keys: Sequence[str]) -> bool:
    """Whether `presented` is one of `keys`, compared in constant time."""
    # Compare against every key so the time taken does not reveal which (or whether one) matched.
    found = False
    for key in keys:
        found |= hmac.compare_digest(presented.encode(), key.encode())
    return found
