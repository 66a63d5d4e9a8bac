"""The one error a JSON schema conversion raises: a ValueError, so the service answers
INVALID_ARGUMENT, with a message naming the construct and where in the schema it is."""

from __future__ import annotations


class SchemaError(ValueError):
    """The schema is malformed, or uses a construct that cannot become a grammar."""
