"""The sandboxed Jinja environment chat templates run in.

Chat templates come from GGUF metadata or the command line, so they are code we did not
write.  They run in an ``ImmutableSandboxedEnvironment`` configured the way Hugging Face
transformers configures it (``trim_blocks``, ``lstrip_blocks``, ``loopcontrols``, a
``tojson`` filter with ``json.dumps`` semantics, ``raise_exception`` and
``strftime_now``), so templates written for transformers render here the same way.

Where llama.cpp's own Jinja engine is more lenient than Python's, and published
templates depend on it, this environment follows llama.cpp: lists have ``append`` and
``pop``; attribute access on an undefined value gives undefined; none/undefined added to
a string counts as ``""``; ``tojson`` accepts lazy sequences such as ``map`` results.

Unsafe attribute access (``''.__class__``) raises :class:`TemplateSecurityError` at once
instead of Jinja's silent empty value, and resource bounds come from
:mod:`service.chat_template_limits`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, NoReturn

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.parser
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEnvironment

from service.chat_template_errors import TemplateError, TemplateSecurityError
from service.chat_template_limits import (
    BoundedConcatCodeGenerator,
    RenderLimits,
    SizeGuard,
    check_deadline,
    template_range,
)


def raise_exception(message: object = "") -> NoReturn:
    """The ``raise_exception(msg)`` global templates use to reject input."""
    raise TemplateError(f"chat template raised an error: {message}")


def tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | str | None = None,
    separators: Sequence[str] | None = None,
    sort_keys: bool = False,
) -> str:
    """``tojson`` as transformers defines it: plain ``json.dumps``, no HTML escaping."""
    if separators is not None and len(separators) != 2:
        raise TemplateError("tojson: separators must be a pair (item_separator, key_separator)")
    return json.dumps(
        value,
        ensure_ascii=ensure_ascii,
        indent=indent,
        separators=(separators[0], separators[1]) if separators is not None else None,
        sort_keys=sort_keys,
        default=_json_fallback,
    )


def _json_fallback(value: Any) -> Any:
    """Serialise what Jinja (unlike llama.cpp's engine) leaves lazy or undefined:
    ``tools | map(attribute='function') | tojson`` hands json.dumps a generator."""
    if isinstance(value, jinja2.Undefined):
        return None
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Iterable) and not isinstance(value, str | bytes):
        return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def strftime_now_at(now: datetime) -> Callable[[str], str]:
    """The ``strftime_now(fmt)`` global, fixed to one clock reading."""

    def strftime_now(fmt: str) -> str:
        return now.strftime(fmt)

    return strftime_now


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class GenerationTagExtension(jinja2.ext.Extension):
    """Accept transformers' ``{% generation %}...{% endgeneration %}`` blocks.

    transformers uses the block to find assistant tokens for training masks; for
    inference its body simply renders.
    """

    tags = {"generation"}  # noqa: RUF012  (jinja2's Extension declares it as a plain set)

    def parse(self, parser: jinja2.parser.Parser) -> list[jinja2.nodes.Node]:
        next(parser.stream)  # the "generation" name token
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return list(body)


# Mutating list methods llama.cpp's own Jinja engine provides (some templates keep queues
# in a namespace, e.g. Kimi K2).  Safe here: every render gets its own copy of the input,
# so a template can only modify data it owns.
_ALLOWED_LIST_MUTATIONS = frozenset({"append", "pop"})


def _null_as_empty_string(left: Any, right: Any) -> tuple[Any, Any]:
    """llama.cpp's engine reads none/undefined as "" when added to a string; some
    published templates (FireFunction v2 adds an undefined ``functions``) rely on it."""

    def is_null(value: Any) -> bool:
        return value is None or isinstance(value, jinja2.Undefined)

    if isinstance(left, str) and is_null(right):
        return left, ""
    if isinstance(right, str) and is_null(left):
        return "", right
    return left, right


class ChatTemplateSandbox(ImmutableSandboxedEnvironment):
    """ImmutableSandboxedEnvironment with HF transformers' chat-template settings."""

    intercepted_binops = frozenset({"*", "**", "+"})
    code_generator_class = BoundedConcatCodeGenerator

    def __init__(self, limits: RenderLimits) -> None:
        super().__init__(
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=[jinja2.ext.loopcontrols, GenerationTagExtension],
            # Like llama.cpp's engine: `undefined.attr` is undefined rather than an error.
            undefined=jinja2.ChainableUndefined,
            # keep_trailing_newline=False and autoescape=False, as in transformers
        )
        self.guard = SizeGuard(limits)
        self.filters.update(self.guard.bounded_filters())
        self.filters["tojson"] = tojson
        self.globals["raise_exception"] = raise_exception
        self.globals["range"] = template_range
        # Renders pass their own clock reading; this default serves direct renders/probes.
        self.globals["strftime_now"] = _strftime_now

    def concat(self, items: Iterable[Any]) -> str:
        """Target of ``~`` (see BoundedConcatCodeGenerator)."""
        return self.guard.concat(items)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, list) and attr in _ALLOWED_LIST_MUTATIONS:
            return SandboxedEnvironment.is_safe_attribute(self, obj, attr, value)
        return super().is_safe_attribute(obj, attr, value)

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        # Jinja's default is an undefined value that prints as "", hiding the attempt.
        raise TemplateSecurityError(
            f"chat template tried to access unsafe attribute {attribute!r} "
            f"of a {type(obj).__name__!r} object"
        )

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        check_deadline()
        self.guard.check_call(obj, args)
        return super().call(context, obj, *args, **kwargs)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        check_deadline()
        if operator == "+":
            left, right = _null_as_empty_string(left, right)
        self.guard.check_binop(operator, left, right)
        return super().call_binop(context, operator, left, right)
