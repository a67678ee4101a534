"""Suite-wide rules: a skipped test is a failed test, and every test carries its tier's marker.

A tier that cannot run (no control-plane binaries, a missing tool) must make the run fail with
a message that says what is missing, never vanish as a skip that nobody reads. Expected failures
(``xfail``) are still allowed; they are strict (``xfail_strict``).
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

TESTS = Path(__file__).resolve().parent
# The markers in pyproject.toml, one per folder.
TIERS = ("unit", "component", "integration", "browser", "image", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``-m unit`` (or component, integration) selects a tier: the folder decides."""
    for item in items:
        parts = item.path.resolve().relative_to(TESTS).parts
        if parts and parts[0] in TIERS:
            item.add_marker(parts[0])


def _as_failure(report: pytest.TestReport | pytest.CollectReport) -> None:
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"skipped, and Sluice treats a skip as a failure: {reason}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.skipped and not hasattr(report, "wasxfail"):
        _as_failure(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    if report.skipped:
        _as_failure(report)
    return report
