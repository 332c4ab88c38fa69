"""values.yaml and values.schema.json: every key documented, typed and defaulted; unknown keys and wrong types refused."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import Any

import helm_python
import jsonschema
import pytest
import yaml
from chart_render import CHART_DIR, SCENARIOS, render_files

SCHEMA: dict[str, Any] = json.loads((CHART_DIR / "values.schema.json").read_text(encoding="utf-8"))
VALUES_TEXT = (CHART_DIR / "values.yaml").read_text(encoding="utf-8")
VALUES: dict[str, Any] = yaml.safe_load(VALUES_TEXT)
VALIDATOR = jsonschema.Draft7Validator(SCHEMA)


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for key, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{key}" if path else key)
    items = node.get("items")
    if isinstance(items, dict):
        yield from walk(items, f"{path}[]")


def test_schema_is_a_valid_draft7_schema() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)


def test_every_object_in_the_schema_refuses_unknown_keys() -> None:
    for path, node in walk(SCHEMA):
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{path or '<root>'} accepts unknown keys"
        if node.get("type") == "object" and "properties" not in node:
            # Free-form maps (labels, annotations, selectors) must still say what their values are,
            # except Kubernetes objects passed through as they are (affinity terms, egress peers).
            assert (
                "additionalProperties" in node
                or path in {"global"}
                or path.startswith(("affinity.", "networkPolicy.extraEgress[]"))
            ), path


def test_every_value_key_has_a_description_and_a_default_matching_values_yaml() -> None:
    def check(schema: dict[str, Any], values: dict[str, Any], path: str) -> None:
        properties = schema["properties"]
        assert set(values) <= set(properties), f"{path}: {set(values) - set(properties)} not in the schema"
        for key, sub in properties.items():
            where = f"{path}.{key}" if path else key
            if where == "global":
                continue
            assert sub.get("description"), f"{where} has no description"
            assert "default" in sub, f"{where} has no default"
            assert key in values, f"{where} is in the schema but not in values.yaml"
            assert sub["default"] == values[key], (
                f"{where}: schema default {sub['default']!r} != values.yaml {values[key]!r}"
            )
            if sub.get("type") == "object" and "properties" in sub and key not in {"resources", "affinity"}:
                check(sub, values[key], where)

    check(SCHEMA, VALUES, "")


def test_values_yaml_validates_and_every_key_is_documented_by_a_comment() -> None:
    VALIDATOR.validate(VALUES)
    lines = VALUES_TEXT.splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z][\w.-]*):", line)
        if not match:
            continue
        indent = match.group(1)
        # A documented key has a comment right above it, or is a section whose children are documented
        # (the next line is indented deeper), or is an entry inside a documented map default.
        previous = lines[i - 1].strip() if i else ""
        next_line = lines[i + 1] if i + 1 < len(lines) else ""
        is_section = line.rstrip().endswith(":") and next_line.startswith(indent + "  ")
        parent_is_map_default = previous and not previous.startswith("#") and len(indent) > 0
        if not (previous.startswith("#") or is_section or parent_is_map_default):
            undocumented.append(f"line {i + 1}: {line.strip()}")
    assert not undocumented, undocumented


def test_every_scenario_is_valid_for_the_schema() -> None:
    chart = helm_python.Chart.load(CHART_DIR)
    for values in SCENARIOS.values():
        chart.validate_schema(values)


def _with(path: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    return out


BAD_VALUES = [
    ("unknownTopLevel", True),
    ("image.tagg", "typo"),
    ("rbac.clusterWide", True),
    ("serviceMonitor.enable", True),
    ("trainer.image.name", "x"),
    ("replicaCount", "2"),
    ("replicaCount", -1),
    ("crds.enabled", "yes"),
    ("rbac.scope", "everywhere"),
    ("watchNamespaces", "team-a"),
    ("watchNamespaces", ["Team_A"]),
    ("image.digest", "latest"),
    ("operator.metricsPort", 70000),
    ("operator.logLevel", "verbose"),
    ("podAnnotations", {"a": 1}),
    ("resources", {"requests": {"gpu": 1}}),
    ("networkPolicy.s3.cidrs", ["not-a-cidr"]),
    ("kueue.defaultQueueName", "Not_A_Queue"),
    ("tolerations", [{"key": "gpu", "operatr": "Exists"}]),
    ("serviceMonitor.interval", 30),
]


@pytest.mark.parametrize(("path", "value"), BAD_VALUES)
def test_schema_refuses_unknown_keys_and_wrong_types(path: str, value: Any) -> None:
    bad = copy.deepcopy(VALUES)
    node = bad
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    errors = list(VALIDATOR.iter_errors(bad))
    assert errors, f"{path}={value!r} was accepted"


@pytest.mark.parametrize(("path", "value"), BAD_VALUES[:6] + BAD_VALUES[8:10])
def test_helm_render_refuses_bad_values(path: str, value: Any) -> None:
    with pytest.raises(helm_python.HelmError) as err:
        render_files(_with(path, value))
    # Helm's message names the offending key.
    assert keys_named(path, str(err.value)), str(err.value)


def keys_named(path: str, message: str) -> bool:
    last = path.split(".")[-1]
    return last in message


def test_scope_and_namespaces_must_agree_in_the_schema() -> None:
    assert list(VALIDATOR.iter_errors({**VALUES, "rbac": {"create": True, "scope": "namespaced"}}))
    assert list(VALIDATOR.iter_errors({**VALUES, "watchNamespaces": ["a"]}))
    assert not list(
        VALIDATOR.iter_errors({**VALUES, "rbac": {"create": True, "scope": "namespaced"}, "watchNamespaces": ["a"]})
    )
