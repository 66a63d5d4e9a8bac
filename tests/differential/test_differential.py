"""The differential harness (issue 16): every case of the corpus sent to llama-server (built
from the pinned source) and to us (through the REST bridge), on the same model and flags, and
the answers compared (compare.py says how). A difference is a failure unless deliberate.py
lists it: as deliberate (with the reason, in docs/fidelity.md too) or as open (xfail)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .compare import diff_answers
from .corpus import Case, all_cases
from .deliberate import DELIBERATE, OPEN
from .pairs import Pairs
from .results import RESULTS

pytestmark = pytest.mark.slow
CASES = all_cases()
DOCS = Path(__file__).resolve().parents[2] / "docs" / "fidelity.md"


def _param(case: Case) -> object:
    marks = [pytest.mark.xfail(reason=OPEN[case.name], strict=True)] if case.name in OPEN else []
    return pytest.param(case, id=case.name, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_same_answer_as_llama_server(pairs: Pairs, case: Case) -> None:
    reference, ours = pairs.get(case.flag_set).send(case)
    diffs = diff_answers(reference, ours, case.compare_text, case.compare_body, case.tolerance)
    if case.name in DELIBERATE:
        RESULTS.record(case.name, "deliberate")
        assert diffs, f"no longer differs: take {case.name!r} off DELIBERATE and the docs"
        return
    if diffs:
        RESULTS.record(case.name, "open" if case.name in OPEN else "new")
    else:
        RESULTS.record(case.name, "identical")
    assert not diffs, "\n".join(diffs)


def test_the_lists_name_real_cases_and_the_docs_list_the_deliberate_ones() -> None:
    names = {c.name for c in CASES}
    assert not (DELIBERATE.keys() | OPEN.keys()) - names
    assert not DELIBERATE.keys() & OPEN.keys()
    documented = set(re.findall(r"^\| `([^`]+)` \|", DOCS.read_text(), re.M))
    assert documented == set(DELIBERATE), "docs/fidelity.md and DELIBERATE differ"
