"""The chat template sandbox: forbidden access, raise_exception, resource bounds, and the
Python-style methods and filters templates rely on."""

from __future__ import annotations

import time

import pytest

from service.chat_template import (
    ChatTemplate,
    RenderLimits,
    TemplateError,
    TemplateLimitError,
    TemplateSecurityError,
)

USER = [{"role": "user", "content": "  Hello World  "}]
TIGHT = RenderLimits(max_seconds=0.3, max_output_chars=100_000, max_value_len=100_000)


def render(source: str, limits: RenderLimits = TIGHT) -> str:
    return ChatTemplate.compile(source, limits=limits).render(USER)


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ raise_exception.__globals__ }}",
        "{{ messages.__class__ }}",
        "{{ messages[0].__init__ }}",
    ],
)
def test_unsafe_attribute_access_is_a_security_error(source: str) -> None:
    with pytest.raises(TemplateSecurityError, match="unsafe attribute"):
        render(source)


def test_security_error_is_a_template_error_and_a_value_error() -> None:
    with pytest.raises(ValueError) as info:
        render("{{ ''.__class__ }}")
    assert isinstance(info.value, TemplateError)


def test_input_dicts_are_immutable_but_lists_allow_append_and_pop() -> None:
    with pytest.raises(TemplateSecurityError):
        render("{{ messages[0].update({'role': 'system'}) }}")
    # llama.cpp's engine has list append/pop and Kimi K2's template uses them.
    assert render("{% set q = [] %}{% set _ = q.append(1) %}{{ q }}{{ q.pop(0) }}{{ q }}") == (
        "[1]1[]"
    )


def test_template_cannot_change_the_callers_messages() -> None:
    messages = [{"role": "user", "content": "hi"}]
    source = "{% set _ = messages.append({'role': 'x'}) %}{{ messages | length }}"
    assert ChatTemplate.compile(source).render(messages) == "2"
    assert messages == [{"role": "user", "content": "hi"}]


def test_raise_exception_surfaces_its_message() -> None:
    source = (
        "{% if messages[0].role == 'user' %}{{ raise_exception('No users allowed!') }}{% endif %}"
    )
    with pytest.raises(TemplateError, match="No users allowed!"):
        render(source)


def test_syntax_error_is_reported_at_compile_time_with_line() -> None:
    with pytest.raises(TemplateError, match="syntax error at line 2"):
        ChatTemplate.compile("ok\n{% for x in %}")


def test_runtime_error_names_the_template_line() -> None:
    with pytest.raises(TemplateError, match=r"template line 3.*ZeroDivisionError"):
        render("a\nb\n{{ 1 // (messages | length - 1) }}")


def test_nested_loops_stop_at_the_deadline() -> None:
    started = time.monotonic()
    with pytest.raises(TemplateLimitError, match="too long"):
        render("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
    # One probe at compile time gives up, the rest are skipped, then the render gives up.
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'a' * 10**9 }}",
        "{{ [0] * 10**9 }}",
        "{% set ns = namespace(s='ab') %}{% for _ in range(60) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}",
        "{% set ns = namespace(s='ab') %}{% for _ in range(60) %}{% set ns.s = ns.s + ns.s %}"
        "{% endfor %}",
        "{{ 'x'.ljust(10**9) }}",
        "{{ 'x' | center(10**9) }}",
        "{{ ('x' * 90000).replace('x', 'yy') }}",
        "{{ ('x' * 90000) | replace('x', 'yy') }}",
        "{{ ('x' * 50000).join(['a', 'b', 'c']) }}",
        "{{ 7 ** (10 ** 9) }}",
    ],
)
def test_oversized_values_are_refused(source: str) -> None:
    with pytest.raises(TemplateLimitError):
        render(source)


def test_output_is_capped() -> None:
    with pytest.raises(TemplateLimitError, match="output exceeds"):
        render("{% for i in range(10000) %}{{ 'x' * 1000 }}{% endfor %}")


def test_runaway_recursion_is_a_template_error() -> None:
    with pytest.raises(TemplateLimitError, match="recursed too deeply"):
        render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}")


def test_python_string_and_dict_methods_work() -> None:
    source = (
        "{% set c = messages[0].content %}"
        "{{ c.strip() }}|{{ c.split() }}|{{ c.strip().startswith('Hello') }}|"
        "{{ c.strip().endswith('x') }}|{{ c.upper().strip() }}|{{ c.lower().strip() }}|"
        "{{ c.strip().replace('World', 'There') }}|{{ c.lstrip()[:5] }}|{{ c.rstrip()[-5:] }}|"
        "{{ c.strip().split(' ', 1)[1] }}|{{ c.strip().title() }}|{{ c | length }}|"
        "{% for k, v in messages[0].items() %}{{ k }}={{ v | trim }};{% endfor %}|"
        "{{ messages[0].get('name', 'anon') }}|{{ messages[0].keys() | list }}|"
        "{{ messages | selectattr('role', 'equalto', 'user') | list | length }}|"
        "{{ messages | map(attribute='role') | join(',') }}"
    )
    assert render(source) == (
        "Hello World|['Hello', 'World']|True|False|HELLO WORLD|hello world|Hello There|"
        "Hello|World|World|Hello World|15|role=user;content=Hello World;|anon|"
        "['role', 'content']|1|user"
    )


def test_tojson_matches_transformers() -> None:
    data = "{% set d = {'b': 'é<&>', 'a': [1, 2]} %}"
    assert render(data + "{{ d | tojson }}") == '{"b": "é<&>", "a": [1, 2]}'
    assert render(data + "{{ d | tojson(ensure_ascii=True) }}") == (
        '{"b": "\\u00e9<&>", "a": [1, 2]}'
    )
    assert render(data + "{{ d | tojson(sort_keys=True) }}") == '{"a": [1, 2], "b": "é<&>"}'
    assert render(data + "{{ d | tojson(separators=(',', ':')) }}") == '{"b":"é<&>","a":[1,2]}'
    assert render(data + "{{ d['a'] | tojson(indent=2) }}") == "[\n  1,\n  2\n]"
    # A lazy map() result serialises as a list, as in llama.cpp's engine.
    assert render("{{ messages | map(attribute='role') | tojson }}") == '["user"]'


def test_loop_controls_and_generation_block() -> None:
    source = (
        "{% for i in range(10) %}{% if i == 3 %}{% break %}{% endif %}"
        "{% if i == 1 %}{% continue %}{% endif %}{{ i }}{% endfor %}"
        "{% generation %}!{% endgeneration %}"
    )
    assert render(source) == "02!"


def test_llama_cpp_leniencies() -> None:
    # Undefined attribute chains are undefined; none/undefined + string is the string.
    assert render("[{{ messages[0].nope.deeper }}]") == "[]"
    assert render("{% set n = none %}{{ 'a' + missing_variable + 'b' }}{{ 'c' ~ n }}") == "abc"
    # An iteration over an undefined value is empty.
    assert render("{% for x in missing %}x{% endfor %}done") == "done"


def test_whitespace_control_matches_transformers() -> None:
    source = (
        "{% for m in messages %}\n    {% if true %}\n[{{ m.role }}]\n    {% endif %}\n{% endfor %}"
    )
    assert render(source) == "[user]\n"
