"""The shape of the code, held by tests so that the next change cannot undo it: no function over 60 lines, and
no import inside a function except of a heavy optional module (an import whose cost only the code path that
needs it should pay). Parametrized by package folder: the operator's packages join by adding a row."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 60

#: Package folder -> {file under it: why it is exempt for now (and who is on it)}.
PACKAGES: dict[str, dict[str, str]] = {
    "trainer_image/eft_trainer": {},
}

#: Modules whose import is heavy (torch and what imports it, S3, plotting, the LLM client, PDF): imported where used.
HEAVY = {
    "torch",
    "sentence_transformers",
    "transformers",
    "datasets",
    "safetensors",
    "huggingface_hub",
    "openai",
    "prometheus_client",
    "matplotlib",
    "boto3",
    "botocore",
    "pypdf",
    "mlflow",
}
#: In-package modules imported where used: they import torch at the top (hf_trainer, sampler), or they are the
#: one method or generator a run chooses (``methods.for_spec``, ``generate.build``).
HEAVY_OWN = ("eft_trainer.hf_trainer", "eft_trainer.sampler", "eft_trainer.methods.", "eft_trainer.generate.")


def _functions(package: str) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    folder = ROOT / package
    exempt = PACKAGES[package]
    for path in sorted(folder.rglob("*.py")):
        rel = path.relative_to(folder).as_posix()
        if rel in exempt:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield f"{package}/{rel}:{node.lineno} {node.name}", node


def _imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    return [node.module or ""]


def _heavy(module: str) -> bool:
    return module.split(".")[0] in HEAVY or module.startswith(HEAVY_OWN) or module in {m.rstrip(".") for m in HEAVY_OWN}


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_function_is_over_60_lines(package: str) -> None:
    long = [
        f"{where} ({fn.end_lineno - fn.lineno + 1} lines)"
        for where, fn in _functions(package)
        if fn.end_lineno is not None and fn.end_lineno - fn.lineno + 1 > MAX_LINES
    ]
    assert not long, f"functions over {MAX_LINES} lines (split them into named steps): {long}"


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_imports_inside_functions_are_of_heavy_modules_only(package: str) -> None:
    found = sorted(
        {
            f"{where}: {module}"
            for where, fn in _functions(package)
            for node in ast.walk(fn)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for module in _imported(node)
            if not _heavy(module)
        }
    )
    assert not found, f"imports inside functions of light modules (import them at the top): {found}"


def test_a_long_function_is_found() -> None:
    """The checks can fail: a 61-line function and a light import inside a function are seen."""
    body = "\n".join(["def f() -> None:", "    import json", *(["    x = 1"] * 59)])
    fn = ast.parse(body).body[0]
    assert isinstance(fn, ast.FunctionDef) and fn.end_lineno == 61
    imports = [m for n in ast.walk(fn) if isinstance(n, ast.Import | ast.ImportFrom) for m in _imported(n)]
    assert imports == ["json"] and not _heavy("json") and _heavy("torch.distributed")
