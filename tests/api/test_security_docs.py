"""docs/security.md: its values and resources are real (schema, policy, eft validate), its tables complete."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from eft_api import policy
from eft_cli.validate import check_document

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "security.md").read_text(encoding="utf-8")
BLOCKS = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", DOC, flags=re.S)]
VALUES, RESOURCE = BLOCKS[0], BLOCKS[1]
SCHEMA = json.loads((REPO / "charts" / "embedding-finetune-operator" / "values.schema.json").read_text())
EXAMPLES = {p.name: yaml.safe_load(p.read_text()) for p in sorted((REPO / "examples").glob("*.yaml"))}
NEED_VALUES = {
    *("quickstart.yaml", "pretrain-tsdae.yaml", "beir.yaml", "documents-llm.yaml", "gpu-kueue.yaml"),
    "baselines-and-merge.yaml",  # its embeddings endpoint must be allowed (llmEndpoints)
    "retrain-loop.yaml",
}


def _verdict(doc: dict[str, Any], values: dict[str, Any] | None, namespace: str) -> tuple[str, str] | None:
    first = policy.first_violation(doc, policy.load(values).for_namespace(namespace))
    return None if first is None else (first.field, first.rule)


def test_the_worked_values_are_valid_chart_values() -> None:
    jsonschema.Draft7Validator(SCHEMA).validate(VALUES)
    policy.load(VALUES["policy"])


def test_the_worked_resource_is_admitted_for_team_a_only() -> None:
    assert check_document(RESOURCE) == []
    assert _verdict(RESOURCE, VALUES["policy"], "team-a") is None
    assert _verdict(RESOURCE, VALUES["policy"], "team-b") == ("spec.storage.endpoint", "policy.storageEndpoints")
    team_b = policy.violations(RESOURCE, policy.load(VALUES["policy"]).for_namespace("team-b"))
    assert ("spec.data.train.uri", "policy.buckets") in [(v.field, v.rule) for v in team_b]


def test_every_example_is_admitted_with_the_documented_values_and_the_named_ones_need_them() -> None:
    for name, doc in EXAMPLES.items():
        assert _verdict(doc, VALUES["policy"], "ml-platform") is None, name
        refused_by_default = _verdict(doc, None, "anywhere") is not None
        assert refused_by_default is (name in NEED_VALUES), name
        assert f"`{name}`" in DOC or not refused_by_default, name


def test_every_policy_key_is_documented_with_its_default() -> None:
    rows = dict(re.findall(r"^\| `(\w+)` \| `([^`]*)`", DOC, flags=re.M))
    for key, node in SCHEMA["properties"]["policy"]["properties"].items():
        assert key in rows, key
        assert yaml.safe_load(rows[key]) == node["default"], key
