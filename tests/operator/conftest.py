"""Fixtures of the operator tests: ``cluster`` (kmock) and ``operator`` (the real kopf loop), from kube_harness.py.

The helpers live in a uniquely named module: several test folders have a conftest.py, and only one of
them can be imported as ``conftest``.
"""

from collections.abc import Iterator

import pytest
from kube_harness import cluster, operator
from operator_process import REPORTS

__all__ = ["cluster", "operator"]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the test (``item.stash[REPORTS]``), so that fixtures can tell at
    teardown whether the test failed (the operator replicas then print their logs)."""
    report = yield
    item.stash.setdefault(REPORTS, {})[report.when] = report
    return report
