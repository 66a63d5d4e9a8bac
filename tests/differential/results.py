"""The harness's tally: each case's outcome, for the summary printed at the end of the run."""

from __future__ import annotations

from collections import Counter


class Results:
    OUTCOMES = ("identical", "deliberate", "open", "new")

    def __init__(self) -> None:
        self._outcomes: dict[str, str] = {}

    def record(self, case: str, outcome: str) -> None:
        assert outcome in self.OUTCOMES
        self._outcomes[case] = outcome

    def counts(self) -> Counter[str]:
        return Counter(self._outcomes.values())

    def summary_lines(self) -> list[str]:
        c = self.counts()
        lines = [f"{sum(c.values())} cases: {c['identical']} identical, "
                 f"{c['deliberate']} deliberate differences, {c['open']} open differences "
                 f"(known), {c['new']} new differences"]
        lines += [f"  new difference: {name}" for name, o in sorted(self._outcomes.items())
                  if o == "new"]
        return lines


RESULTS = Results()
