"""The operator side stays readable: no function or method over 60 lines in ``eft_operator``, ``eft_api`` and
``eft_cli`` (split into named helpers with one concern each). Read from the source with ``ast``, so a new long
function fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

OPERATOR_ROOT = Path(__file__).resolve().parents[2] / "operator"
PACKAGES = ("eft_operator", "eft_api", "eft_cli")
MAX_LINES = 60
Function = ast.FunctionDef | ast.AsyncFunctionDef


def _functions(tree: ast.AST) -> list[Function]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]


def long_functions(source: str, limit: int = MAX_LINES) -> list[tuple[str, int, int]]:
    """(name, first line, length) of every function longer than ``limit`` lines, decorators excluded."""
    return [
        (f.name, f.lineno, (f.end_lineno or f.lineno) - f.lineno + 1)
        for f in _functions(ast.parse(source))
        if (f.end_lineno or f.lineno) - f.lineno + 1 > limit
    ]


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (OPERATOR_ROOT / pkg).rglob("*.py"))


def test_the_check_sees_a_long_function() -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))
    assert long_functions(f"def f():\n{body}\n") == [("f", 1, MAX_LINES + 1)]
    assert long_functions(f"async def g():\n{body[: body.rindex(chr(10))]}\n") == []


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(OPERATOR_ROOT)))
def test_no_function_over_60_lines(path: Path) -> None:
    assert long_functions(path.read_text()) == [], f"{path}: split these into named helpers with one concern each"
