"""The hostile user's cases (tests/hostile_cases.py) as tests, one per case: every bad input at
every face is handled cleanly and every injected fault is survived. Most compile, train or start
processes, so they are in the slow tier; the few that are argument errors and action checks (the
recount's `--tiny`) stay in the fast tier. `python tests/hostile_cases.py` prints them all as one
table with the two ratios.
"""

import pytest

from hostile_cases import Work, all_cases, judge

CASES = all_cases()


def params(kind: str) -> list:
    marks = lambda case: ([] if case.tiny else [pytest.mark.slow]) + (
        [pytest.mark.xfail(strict=True, reason=case.known)] if case.known else [])
    return [pytest.param(case, id=case.name, marks=marks(case)) for case in CASES if case.kind == kind]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Work:
    """One folder for the module's cases: the runs they start from are made once, on first use."""
    return Work(tmp_path_factory.mktemp("hostile"))


def _judged(case, work) -> tuple[bool, str]:
    handled, note = judge(case, work)
    if handled is None:
        pytest.skip(note)
    return handled, note


@pytest.mark.parametrize("case", params("input"))
def test_a_bad_input_is_handled_cleanly(case, work):
    handled, note = _judged(case, work)
    assert handled, f"{case.name}: expected {case.expected}; {note}"


@pytest.mark.parametrize("case", params("fault"))
def test_an_injected_fault_is_survived(case, work):
    handled, note = _judged(case, work)
    assert handled, f"{case.name}: expected {case.expected}; {note}"


def test_the_cases_have_distinct_names_and_a_fast_tier():
    names = [case.name for case in CASES]
    assert len(set(names)) == len(names)
    assert {case.kind for case in CASES} == {"input", "fault"}
    assert 5 <= sum(case.tiny for case in CASES) <= 12
