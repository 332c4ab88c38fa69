"""Fixtures of the operator tests: ``cluster`` (kmock) and ``operator`` (the real kopf loop), from kube_harness.py.

The helpers live in a uniquely named module: several test folders have a conftest.py, and only one of
them can be imported as ``conftest``.
"""

from kube_harness import cluster, operator

__all__ = ["cluster", "operator"]
