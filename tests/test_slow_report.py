"""The suite reports a test that grew slow without the `slow` mark (tests/slow_report.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = """
import time

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def trained():
    time.sleep(0.12)  # a run trained once for the module: charged to its first test's setup


def test_quick():
    pass


def test_grew_slow():
    time.sleep(0.12)


def test_first_user_of_a_slow_fixture(trained):
    pass


@pytest.mark.slow
def test_known_to_be_slow():
    time.sleep(0.12)
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini("[pytest]\nmarkers =\n    slow: slow\n")
    pytester.makepyfile(test_some=TESTS)
    return pytester


def test_unmarked_tests_over_the_threshold_are_listed_in_the_summary(suite) -> None:
    result = suite.runpytest_inprocess("-p", "slow_report", "--unmarked-slow-after=0.08")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        [
            "*= unmarked slow tests =*",
            "warning: 2 test(s) not marked slow took more than 0.08 s each; mark them*",
            "*s  test_some.py::test_*",
            "*s  test_some.py::test_*",
        ]
    )
    out = result.stdout.str()
    assert "test_some.py::test_grew_slow" in out
    # its setup took under 0.5 s: no note
    assert "test_some.py::test_first_user_of_a_slow_fixture (setup " not in out
    assert "test_some.py::test_first_user_of_a_slow_fixture" in out
    assert "test_known_to_be_slow" not in out and "test_quick" not in out


def test_the_default_is_the_slow_markers_five_seconds_and_zero_turns_it_off(suite) -> None:
    for args in ([], ["--unmarked-slow-after=0"]):
        result = suite.runpytest_inprocess("-p", "slow_report", *args)
        result.assert_outcomes(passed=4)
        assert "unmarked slow tests" not in result.stdout.str()
    suite.makeini("[pytest]\nmarkers =\n    slow: slow\nunmarked_slow_after = 0.08\n")
    result = suite.runpytest_inprocess("-p", "slow_report")
    result.stdout.fnmatch_lines(["warning: 2 test(s) not marked slow took more than 0.08 s*"])


def test_under_xdist_the_controller_lists_them_from_the_workers_reports(
    suite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """make test runs on pytest-xdist workers: the workers collect and run, the controller
    prints the summary from their reports."""
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))  # the workers import the plugin
    result = suite.runpytest_subprocess(
        "-p", "slow_report", "-n", "2", "--unmarked-slow-after=0.08"
    )
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        ["warning: 2 test(s) not marked slow took more than 0.08 s each; mark them*"]
    )
    out = result.stdout.str()
    assert "test_some.py::test_grew_slow" in out
    assert "test_known_to_be_slow" not in out and "test_quick" not in out
