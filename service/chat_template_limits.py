"""Bounds on one chat template render: a deadline, an output cap and value-size checks.

A runaway template (an endless nested loop, a string doubled forty times, a huge power)
must end in :class:`TemplateLimitError` instead of eating the process.  The sandbox
calls in here from the places a template can make work or memory grow: every function
call and operator it intercepts, ``range()`` iteration, ``~`` concatenation (through a
code generator hook), and the few string methods and filters that widen their input.

This is best effort, aimed at buggy templates rather than hostile ones: ``%`` and
``format`` width specifiers, for one, are not checked.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, SupportsIndex, overload

import jinja2
import jinja2.filters
from jinja2.compiler import CodeGenerator, Frame
from jinja2.nodes import Concat, EvalContext
from jinja2.sandbox import safe_range

from service.chat_template_errors import TemplateLimitError


@dataclass(frozen=True)
class RenderLimits:
    """Bounds on one render; generous enough for any real prompt."""

    max_seconds: float = 10.0
    max_output_chars: int = 64 * 1024 * 1024
    # Largest string/list one operation may build.
    max_value_len: int = 16 * 1024 * 1024
    # Largest exponent ``**`` accepts when the base is an integer other than -1, 0, 1.
    max_int_exponent: int = 4096


DEFAULT_LIMITS = RenderLimits()


# Wall-clock deadline (time.monotonic()) of the render running in this thread/task, if any.
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "chat_template_deadline", default=None
)


def check_deadline() -> None:
    """Raise TemplateLimitError if the current render is past its deadline."""
    deadline = _deadline.get()
    if deadline is not None and time.monotonic() > deadline:
        raise TemplateLimitError("chat template rendering took too long (time limit exceeded)")


def render_bounded(template: jinja2.Template, context: dict[str, Any], limits: RenderLimits) -> str:
    """Render under the deadline and output cap; the caller maps exceptions."""
    token = _deadline.set(time.monotonic() + limits.max_seconds)
    try:
        pieces: list[str] = []
        total = 0
        for piece in template.generate(context):
            total += len(piece)
            if total > limits.max_output_chars:
                raise TemplateLimitError(
                    f"chat template output exceeds {limits.max_output_chars} characters"
                )
            check_deadline()
            pieces.append(piece)
        return "".join(pieces)
    finally:
        _deadline.reset(token)


class DeadlineRange(Sequence[int]):
    """``range()`` for templates: the sandbox's size cap, plus a deadline check while
    iterating so that nested loops with empty bodies cannot spin for hours."""

    def __init__(self, inner: range) -> None:
        self._inner = inner

    def __iter__(self) -> Iterator[int]:
        for count, item in enumerate(self._inner):
            if count % 4096 == 0:
                check_deadline()
            yield item

    def __len__(self) -> int:
        return len(self._inner)

    @overload
    def __getitem__(self, index: SupportsIndex) -> int: ...

    @overload
    def __getitem__(self, index: slice) -> DeadlineRange: ...

    def __getitem__(self, index: SupportsIndex | slice) -> int | DeadlineRange:
        if isinstance(index, slice):
            return DeadlineRange(self._inner[index])
        return self._inner[index]

    def __contains__(self, item: object) -> bool:
        return item in self._inner

    def __reversed__(self) -> Iterator[int]:
        return iter(DeadlineRange(self._inner[::-1]))


def template_range(*args: int) -> DeadlineRange:
    return DeadlineRange(safe_range(*args))


_SIZED = (str, list, tuple)
_WIDTH_METHODS = frozenset({"ljust", "rjust", "center", "zfill"})


@dataclass(frozen=True)
class SizeGuard:
    """Checks that an operation's result stays under ``limits.max_value_len``."""

    limits: RenderLimits

    def check_len(self, length: int) -> None:
        if length > self.limits.max_value_len:
            raise TemplateLimitError(
                f"chat template built a value of {length} items (limit {self.limits.max_value_len})"
            )

    def check_binop(self, operator: str, left: Any, right: Any) -> None:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, _SIZED) and isinstance(times, int):
                    self.check_len(len(seq) * max(times, 0))
        elif operator == "+":
            if isinstance(left, _SIZED) and isinstance(right, _SIZED):
                self.check_len(len(left) + len(right))
        elif operator == "**" and (
            isinstance(left, int)
            and isinstance(right, int)
            and left not in (-1, 0, 1)
            and right > self.limits.max_int_exponent
        ):
            raise TemplateLimitError(f"chat template computed a huge power (** {right})")

    def check_call(self, func: Any, args: tuple[Any, ...]) -> None:
        """Pre-check the str methods whose result can be far larger than their input."""
        owner = getattr(func, "__self__", None)
        if not isinstance(owner, str) or not args:
            return
        name = getattr(func, "__name__", "")
        if name in _WIDTH_METHODS and isinstance(args[0], int):
            self.check_len(args[0])
        elif name == "expandtabs" and isinstance(args[0], int):
            self.check_len(len(owner) * max(args[0], 1))
        elif name == "replace" and len(args) >= 2:
            self._check_replace(owner, args[0], args[1])
        elif name == "join" and isinstance(args[0], Sequence):
            self.check_len(len(owner) * len(args[0]) + sum(_len(x) for x in args[0]))

    def _check_replace(self, text: str, old: Any, new: Any) -> None:
        if isinstance(old, str) and isinstance(new, str) and len(new) > len(old):
            self.check_len(len(text) + text.count(old) * (len(new) - len(old)))

    def concat(self, items: Iterable[Any]) -> str:
        """``a ~ b ~ c``: Jinja's str_join, refusing to build an oversized string.

        ``none`` joins as "" (not "None"), as in llama.cpp's engine."""
        pieces = ["" if item is None else str(item) for item in items]
        self.check_len(sum(len(p) for p in pieces))
        return "".join(pieces)

    def bounded_filters(self) -> dict[str, Callable[..., Any]]:
        """Replacements for the built-in filters that widen their input."""

        def center(value: str, width: int = 80) -> str:
            self.check_len(width)
            return jinja2.filters.do_center(value, width)

        def indent(s: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
            pad = width if isinstance(width, int) else len(width)
            self.check_len(len(str(s)) + pad * (str(s).count("\n") + 1))
            return jinja2.filters.do_indent(s, width, first, blank)

        @jinja2.pass_eval_context
        def replace(
            eval_ctx: EvalContext, s: str, old: str, new: str, count: int | None = None
        ) -> str:
            self._check_replace(str(s), old, new)
            return str(jinja2.filters.do_replace(eval_ctx, s, old, new, count))

        @jinja2.pass_eval_context
        def join(
            eval_ctx: EvalContext, value: Iterable[Any], d: str = "", attribute: Any = None
        ) -> str:
            items = list(value)
            self.check_len(len(d) * len(items) + sum(_len(x) for x in items))
            return str(jinja2.filters.do_join(eval_ctx, items, d, attribute))

        return {"center": center, "indent": indent, "replace": replace, "join": join}


def _len(value: Any) -> int:
    return len(value) if isinstance(value, _SIZED) else 0


class BoundedConcatCodeGenerator(CodeGenerator):
    """Compiles ``~`` to ``environment.concat(...)`` so its result size is checked.

    The environment using it must provide ``concat(items) -> str`` (no autoescape).
    """

    def visit_Concat(self, node: Concat, frame: Frame) -> None:
        self.write("environment.concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")
