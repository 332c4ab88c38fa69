"""`eft validate` output and exit codes."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from typing import Any

from eft_cli.main import main
from eft_cli.validate import validate_files

REPO = Path(__file__).resolve().parents[2]
INVALID = sorted((Path(__file__).parent / "invalid").glob("*.yaml"))


def test_validate_examples_exit_zero() -> None:
    out = io.StringIO()
    assert validate_files([str(p) for p in sorted((REPO / "examples").glob("*.yaml"))], out) == 0
    assert out.getvalue().count(" is valid") >= 5


def test_validate_invalid_corpus_names_file_and_field_for_each() -> None:
    out = io.StringIO()
    assert validate_files([str(p) for p in INVALID], out, quiet=True) == 1
    lines = out.getvalue().splitlines()
    for path in INVALID:
        expect = next(line for line in path.read_text().splitlines() if line.startswith("# expect: "))[10:]
        assert any(line.startswith(f"{path}: {expect}: ") for line in lines), (path.name, lines)


def test_validate_reports_yaml_syntax_errors_with_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: finetune.eft.dev/v1alpha1\nkind: EmbeddingFinetune\nspec:\n  model: [unclosed\n")
    out = io.StringIO()
    assert validate_files([str(bad)], out) == 1
    assert out.getvalue().startswith(f"{bad}:5:") or f"{bad}:4:" in out.getvalue()


def test_validate_multi_document_skips_other_kinds(tmp_path: Path) -> None:
    docs = tmp_path / "all.yaml"
    docs.write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n---\n" + (REPO / "examples" / "quickstart.yaml").read_text()
    )
    out = io.StringIO()
    assert validate_files([str(docs)], out) == 0
    assert "#1: EmbeddingFinetune quickstart is valid" in out.getvalue()


def test_validate_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    out = io.StringIO()
    assert validate_files([str(tmp_path / "nope.yaml")], out) == 1
    assert "cannot read" in out.getvalue()


def test_console_script_exit_codes_and_help() -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "eft_cli.main", "validate", str(REPO / "examples" / "quickstart.yaml")],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "eft_cli.main", "validate", str(INVALID[0])], capture_output=True, text=True
    )
    assert bad.returncode == 1
    assert str(INVALID[0]) in bad.stdout
    assert main([]) == 2


def test_commands_that_talk_to_a_cluster_say_what_to_install_without_the_kubernetes_package(
    capsys: Any, monkeypatch: Any
) -> None:
    """The operator image leaves the kubernetes package out (kopf would import its 30 MB of models); its
    ``eft`` then says so instead of a traceback."""
    monkeypatch.setitem(sys.modules, "kubernetes", None)
    assert main(["validate", "--server", str(REPO / "examples" / "quickstart.yaml")]) == 2
    err = capsys.readouterr().err
    assert "kubernetes package" in err and "[cli]" in err and "Traceback" not in err
    assert main(["retrain", "demo", "-n", "ml"]) == 2
    out = capsys.readouterr()
    assert "[cli]" in out.out + out.err
