"""The README tells how to run the operator outside a cluster: every setting it reads, and the right jsonpath."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
CONFIG = (REPO / "operator" / "eft_operator" / "config.py").read_text(encoding="utf-8")


def test_every_environment_variable_of_the_operator_is_in_the_readme_table() -> None:
    read = set(re.findall(r'(?:text|port)\("(EFT_[A-Z_]+)"', CONFIG))
    assert len(read) >= 9
    rows = "\n".join(line for line in README.splitlines() if line.startswith("| `EFT_"))
    assert {v for v in read if f"`{v}`" not in rows} == set()
    assert "eft-operator" in README and "KUBECONFIG" in README


def test_the_failure_jsonpath_reads_the_reason() -> None:
    assert """[?(@.type=="Stalled")].reason}""" in README
    for reason in ("JobRejected", "PodCreationRefused", "ImageNotAllowed", "Unschedulable", "ReconcileFailed"):
        assert f"`{reason}`" in README
