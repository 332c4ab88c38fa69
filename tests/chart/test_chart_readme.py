"""The chart README documents every value and carries the same Argo CD health check as the chart."""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterator
from typing import Any

from chart_render import CHART_DIR

README = (CHART_DIR / "README.md").read_text(encoding="utf-8")
SCHEMA: dict[str, Any] = json.loads((CHART_DIR / "values.schema.json").read_text(encoding="utf-8"))
PASS_THROUGH = {"resources", "affinity"}


def leaf_keys(node: dict[str, Any], path: str = "") -> Iterator[str]:
    for key, sub in node.get("properties", {}).items():
        where = f"{path}.{key}" if path else key
        if where == "global":
            continue
        if sub.get("type") == "object" and "properties" in sub and where not in PASS_THROUGH:
            yield from leaf_keys(sub, where)
        else:
            yield where


def test_values_table_lists_every_key_with_its_default() -> None:
    rows = dict(re.findall(r"^\| `([^`]+)` \| \w+ \| `([^`]*)` \|", README, flags=re.M))
    keys = list(leaf_keys(SCHEMA))
    assert set(rows) == set(keys)
    for key in keys:
        node = SCHEMA
        for part in key.split("."):
            node = node["properties"][part]
        assert json.loads(rows[key]) == node["default"], key


def test_argocd_snippet_is_the_chart_health_check() -> None:
    block = README.split("resource.customizations.health.finetune.eft.dev_EmbeddingFinetune: |\n", 1)[1].split(
        "```", 1
    )[0]
    lua = (CHART_DIR / "files" / "argocd" / "health.lua").read_text(encoding="utf-8")
    assert textwrap.dedent(block) == lua


def test_install_upgrade_uninstall_are_documented() -> None:
    assert "helm install eft charts/embedding-finetune-operator --namespace eft-system --create-namespace" in README
    assert "helm upgrade eft" in README and "never upgrades them" in README
    assert "helm uninstall eft" in README and "helm.sh/resource-policy: keep" in README and "S3" in README
