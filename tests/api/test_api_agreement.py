"""The CRD schema (structural + CEL) and the typed model agree on every example and every invalid resource."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from cel import failing_rules

from eft_api.schema import structural_problems
from eft_api.spec import InvalidSpec, parse_resource

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
INVALID = sorted((Path(__file__).parent / "invalid").glob("*.yaml"))


def _header(path: Path, key: str) -> str:
    m = re.search(rf"^# {key}: (.+)$", path.read_text(), re.M)
    assert m, f"{path.name} lacks a '# {key}:' line"
    return m.group(1).strip()


def _load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict)
    return doc


def test_the_corpora_are_big_enough() -> None:
    assert len(EXAMPLES) >= 5
    assert len(INVALID) >= 20
    names = {p.stem for p in EXAMPLES}
    assert {"quickstart", "triplets-hard-negatives", "scored-pairs", "beir", "gpu-kueue"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_example_is_accepted_by_schema_cel_and_typed_model(path: Path) -> None:
    doc = _load(path)
    assert structural_problems(doc) == []
    assert failing_rules(doc) == []
    meta, spec = parse_resource(doc)
    assert meta.name == doc["metadata"]["name"]
    assert spec.model.base == doc["spec"]["model"]["base"]


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_resource_is_rejected_naming_the_field(path: Path) -> None:
    doc = _load(path)
    expect = _header(path, "expect")
    layer = _header(path, "rejected-by")

    with pytest.raises(InvalidSpec) as info:
        parse_resource(doc)
    assert expect in [p.path for p in info.value.problems], info.value.problems

    structural = [p.path for p in structural_problems(doc)]
    cel = [where for _, where in failing_rules(doc)] if not structural else []
    if layer == "schema":
        assert expect in structural, structural
    else:
        assert layer == "cel"
        assert structural == [], "a CEL case must pass the structural schema"
        assert cel == [expect]
