"""The operator uses kopf's public API only: kopf's internal modules (``kopf._cogs``, ``kopf._core``) may
change in any release, so no operator module imports them (the API client is ``kubernetes_asyncio``)."""

from __future__ import annotations

import ast
from pathlib import Path

OPERATOR = Path(__file__).resolve().parents[2] / "operator" / "eft_operator"


def test_no_operator_module_imports_kopf_internals() -> None:
    offenders = []
    for path in sorted(OPERATOR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.startswith("kopf._")]
    assert offenders == []
