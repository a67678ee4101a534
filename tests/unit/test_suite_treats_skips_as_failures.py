"""A tier that cannot run must fail the run: the suite's conftest turns skips into failures."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT_CONFTEST = Path(__file__).parents[1] / "conftest.py"


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(ROOT_CONFTEST.read_text())
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    return pytester


def test_a_skipped_test_fails_with_its_reason(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        """
        import pytest
        def test_needs_binaries():
            pytest.skip("etcd is not built")
        """
    )

    result = suite.runpytest_inprocess()

    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*Sluice treats a skip as a failure*etcd is not built*"])


def test_a_module_skipped_at_import_fails_collection(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        """
        import pytest
        pytest.importorskip("no_such_module_for_sluice")
        def test_never_runs():
            pass
        """
    )

    result = suite.runpytest_inprocess()

    result.assert_outcomes(errors=1)
    assert result.ret != 0


def test_expected_failures_still_count_as_expected(suite: pytest.Pytester) -> None:
    suite.makepyfile(
        """
        import pytest
        @pytest.mark.xfail(reason="known", strict=True)
        def test_known():
            assert False
        """
    )

    suite.runpytest_inprocess().assert_outcomes(xfailed=1)
