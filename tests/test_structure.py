"""The shape of the code, held by tests so that the next change cannot undo it: no function over 60 lines, and
no import inside a function except of a heavy optional module (an import whose cost only the code path that
needs it should pay). Parametrized by package folder: the operator's packages join by adding a row."""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterator
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


# ---------------------------------------------------------------- one store, chosen once

TRAINER = ROOT / "trainer_image" / "eft_trainer"
#: The store types: a parameter, field or return of one of them is never optional (the store is chosen once).
STORE_TYPES = {"Store", "Storage", "S3Store", "LocalStore"}
#: The one place that reads the development folder's variable: the chooser (and the constant's own line).
CHOOSER = ("storage.py", {"open_store", "DATA_ROOT_ENV"})


def _annotations(tree: ast.AST) -> Iterator[tuple[int, ast.expr]]:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
            yield from ((a.lineno, a.annotation) for a in args if a.annotation is not None)
            if node.returns is not None:
                yield node.lineno, node.returns
        elif isinstance(node, ast.AnnAssign):
            yield node.lineno, node.annotation


def optional_stores(source: str) -> list[int]:
    """Lines where a store type is annotated as optional (``Store | None``, ``Optional[Store]``). Pure."""
    found = []
    for line, ann in _annotations(ast.parse(source)):
        text = ann.value if isinstance(ann, ast.Constant) and isinstance(ann.value, str) else ast.unparse(ann)
        expr = ast.parse(text, mode="eval").body
        names = {n.id for n in ast.walk(expr) if isinstance(n, ast.Name)}
        if names & STORE_TYPES and ("None" in text or "Optional" in names):
            found.append(line)
    return found


def data_root_reads(source: str, allowed: Collection[str] = ()) -> list[int]:
    """Lines naming the development folder's variable (``DATA_ROOT_ENV`` or the string ``"EFT_DATA_ROOT"``, not
    in a docstring) outside the top-level definitions ``allowed``. Pure."""
    tree = ast.parse(source)
    found = []
    for top in tree.body:
        names = {t.id for t in getattr(top, "targets", []) if isinstance(t, ast.Name)}
        if getattr(top, "name", None) in allowed or names & set(allowed):
            continue
        docstrings = {
            id(n.body[0].value)
            for n in ast.walk(top)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            and n.body
            and isinstance(n.body[0], ast.Expr)
        }
        for node in ast.walk(top):
            named = isinstance(node, ast.Name) and node.id == "DATA_ROOT_ENV"
            named = named or (isinstance(node, ast.Attribute) and node.attr == "DATA_ROOT_ENV")
            literal = isinstance(node, ast.Constant) and node.value == "EFT_DATA_ROOT" and id(node) not in docstrings
            if named or literal:
                found.append(node.lineno)
    return found


def test_the_store_is_never_optional_and_the_data_root_is_read_by_the_chooser_alone() -> None:
    optional, reads = [], []
    for path in sorted(TRAINER.rglob("*.py")):
        rel, source = path.relative_to(TRAINER).as_posix(), path.read_text(encoding="utf-8")
        optional += [f"{rel}:{n}" for n in optional_stores(source)]
        allowed = CHOOSER[1] if rel == CHOOSER[0] else set()
        reads += [f"{rel}:{n}" for n in data_root_reads(source, allowed)]
    assert not optional, f"a store annotated as optional (pass the run's Store, chosen by open_store): {optional}"
    assert not reads, f"EFT_DATA_ROOT read outside storage.open_store (choose the store there, once): {reads}"


@pytest.mark.parametrize(
    ("source", "optional", "reads"),
    [
        ("def f(storage: Storage | None) -> None: ...", [1], []),
        ("def f(s: 'Store | None' = None) -> None: ...", [1], []),
        ("from typing import Optional\ndef f(s: Optional[S3Store]) -> None: ...", [2], []),
        ("class C:\n    store: LocalStore | None = None", [2], []),
        ("def f() -> Store | None: ...", [1], []),
        ("def f(s: Store, prefix: S3Uri | None) -> None: ...", [], []),
        ("import os\ndef f() -> str | None:\n    return os.environ.get(DATA_ROOT_ENV)", [], [3]),
        ("def f(env: dict[str, str]) -> bool:\n    return 'EFT_DATA_ROOT' in env", [], [2]),
        ("def f() -> None:\n    '''EFT_DATA_ROOT'''", [], []),
        ("import eft_trainer.storage as s\nX = s.DATA_ROOT_ENV", [], [2]),
    ],
)
def test_the_store_checks_can_fail(source: str, optional: list[int], reads: list[int]) -> None:
    assert (optional_stores(source), data_root_reads(source)) == (optional, reads)
