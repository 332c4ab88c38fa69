"""The operator uses libraries' public API only: kopf's internal modules (``kopf._cogs``, ``kopf._core``) may
change in any release, so no operator module imports them (the API client is aiohttp with kopf's login, eft_operator.connection); and no
private keyword or attribute of a library (``_request_timeout``, ``Gauge._value``) is used on the operator
side, code or tests."""

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


REPO = OPERATOR.parents[1]
#: Where the operator side lives, and the tests that drive it.
CHECKED = [REPO / "operator", REPO / "tests" / "operator", REPO / "tests" / "api"]


#: Names that start with an underscore but are documented public API (``os._exit``: exit without cleanup).
DOCUMENTED = {("os", "_exit")}


def private_uses(source: str) -> list[str]:
    """Private API of a library in ``source``: a ``_keyword=`` argument (``_request_timeout``,
    ``_content_type``), or a private attribute read off something other than ``self``/``cls``/``super()``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            found += [f"{node.lineno}: _{k.arg[1:]}=" for k in node.keywords if k.arg and k.arg.startswith("_")]
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value
            mine = (isinstance(owner, ast.Name) and owner.id in ("self", "cls")) or isinstance(owner, ast.Call)
            mine = mine or (isinstance(owner, ast.Name) and (owner.id, node.attr) in DOCUMENTED)
            if not mine:
                found.append(f"{node.lineno}: .{node.attr}")
    return found


def test_the_check_sees_private_uses() -> None:
    source = "api.call(x, _request_timeout=3)\ngauge._value.get()\nself._lock\nsuper().__init__()\n"
    assert private_uses(source) == ["1: _request_timeout=", "2: ._value"]


def test_no_private_api_of_a_library_in_the_operator_and_its_tests() -> None:
    offenders = []
    for root in CHECKED:
        for path in sorted(root.rglob("*.py")):
            offenders += [f"{path.relative_to(REPO)}:{u}" for u in private_uses(path.read_text())]
    assert offenders == []
