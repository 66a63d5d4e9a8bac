"""The errors chat template compilation and rendering raise.

All are ``ValueError``s: the cause is the template or the request's messages, never a
bug in the server, so the service maps them to INVALID_ARGUMENT (HTTP 400).
"""

from __future__ import annotations


class TemplateError(ValueError):
    """A chat template could not be compiled or rendered for the given input."""


class TemplateSecurityError(TemplateError):
    """The template tried something the sandbox forbids (e.g. ``''.__class__``)."""


class TemplateLimitError(TemplateError):
    """The template ran past a render bound (time, output size, value size, recursion)."""
