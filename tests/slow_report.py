"""A pytest plugin: at the end of a run, the tests not marked ``slow`` that took longer than the
marker's own definition (5 s, set by the ini option ``unmarked_slow_after`` or the command-line
option ``--unmarked-slow-after=SECONDS``; 0 turns the report off) are listed in the terminal
summary, so that a test that grows slow is seen before the fast tier (``make test``) does.

A test's time is its setup, call and teardown together (as ``--durations`` counts them): a
module-scoped fixture that trains a run is charged to the first test that uses it, and the line
says how much of the time was setup.
"""

from __future__ import annotations

import pytest

DEFAULT_SECONDS = 5.0


class SlowReport:
    """The plugin object of one pytest run: which tests are marked slow, and their times."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.marked: dict[str, bool] = {}  # nodeid -> marked slow
        self.phases: dict[str, dict[str, float]] = {}  # nodeid -> setup/call/teardown -> s

    def unmarked_slow(self) -> list[tuple[str, float, float]]:
        """(nodeid, total seconds, setup seconds) of the unmarked tests over the threshold,
        slowest first."""
        found = []
        for nodeid, phases in self.phases.items():
            total = sum(phases.values())
            if not self.marked.get(nodeid, False) and total > self.threshold:
                found.append((nodeid, total, phases.get("setup", 0.0)))
        return sorted(found, key=lambda row: -row[1])

    def lines(self) -> list[str]:
        rows = self.unmarked_slow()
        if not rows:
            return []
        lines = [
            f"warning: {len(rows)} test(s) not marked slow took more than "
            f"{self.threshold:g} s each; mark them @pytest.mark.slow or make them cheaper:"
        ]
        for nodeid, total, setup in rows:
            note = f" (setup {setup:.1f} s)" if setup >= 0.5 else ""
            lines.append(f"  {total:6.1f} s  {nodeid}{note}")
        return lines

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        # from the report, not from collection: under pytest-xdist the workers collect, and
        # the controller, which prints the summary, sees only their reports
        self.marked[report.nodeid] = "slow" in report.keywords
        phases = self.phases.setdefault(report.nodeid, {})
        phases[report.when] = phases.get(report.when, 0.0) + report.duration

    def pytest_terminal_summary(self, terminalreporter) -> None:
        lines = self.lines()
        if lines:
            terminalreporter.write_sep("=", "unmarked slow tests", yellow=True)
            for line in lines:
                terminalreporter.write_line(line, yellow=True)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "unmarked_slow_after",
        "seconds after which a test not marked slow is reported at the end of the run (0: off)",
        default=str(DEFAULT_SECONDS),
    )
    parser.addoption(
        "--unmarked-slow-after",
        type=float,
        default=None,
        metavar="SECONDS",
        help="report tests not marked slow that take longer than this (0: off); "
        f"default: the ini option unmarked_slow_after ({DEFAULT_SECONDS:g} s)",
    )


def pytest_configure(config: pytest.Config) -> None:
    seconds = config.getoption("--unmarked-slow-after")
    if seconds is None:
        seconds = float(config.getini("unmarked_slow_after"))
    if seconds > 0:
        config.pluginmanager.register(SlowReport(seconds), "unmarked-slow-report")
