"""The chart's CRDs: the chart's copy is crds/ byte for byte; gated by crds.enabled, kept by crds.keep."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml
from chart_render import CHART_DIR, REPO, by_kind, docs_of, render_files

EFT_CRD = "embeddingfinetunes.finetune.eft.dev"


def crds(values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in by_kind(docs_of(render_files(values)), "CustomResourceDefinition")}


def test_chart_copy_is_identical_to_crds_dir() -> None:
    source = (REPO / "crds" / "embeddingfinetunes.yaml").read_bytes()
    copy = (CHART_DIR / "files" / "crds" / "embeddingfinetunes.yaml").read_bytes()
    assert copy == source, "run: cp crds/embeddingfinetunes.yaml charts/embedding-finetune-operator/files/crds/"


def test_chart_has_no_crds_dir() -> None:
    # Helm installs crds/ once and never upgrades it; the chart templates its CRDs instead.
    assert not (CHART_DIR / "crds").exists()


def test_rendered_crd_is_the_source_plus_the_keep_annotation() -> None:
    source = yaml.safe_load((REPO / "crds" / "embeddingfinetunes.yaml").read_text(encoding="utf-8"))
    rendered = crds({})[EFT_CRD]
    assert rendered["metadata"].pop("annotations") == {"helm.sh/resource-policy": "keep"}
    assert rendered == source
    not_kept = crds({"crds": {"keep": False}})[EFT_CRD]
    assert "annotations" not in not_kept["metadata"]
    assert not_kept == source


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, {EFT_CRD}),
        ({"crds": {"enabled": False}}, set()),
        ({"replicaCount": 2}, {EFT_CRD}),  # replicas elect a leader by a Lease: no kopf peering
        ({"peering": {"enabled": True}}, {EFT_CRD, "clusterkopfpeerings.kopf.dev"}),
        ({"peering": {"enabled": True, "installCrds": False}}, {EFT_CRD}),
        (
            {"rbac": {"scope": "namespaced"}, "watchNamespaces": ["a"], "peering": {"enabled": True}},
            {EFT_CRD, "kopfpeerings.kopf.dev"},
        ),
        ({"crds": {"enabled": False}, "replicaCount": 2}, set()),
    ],
)
def test_crds_are_gated(values: dict[str, Any], expected: set[str]) -> None:
    rendered = crds(values)
    assert set(rendered) == expected
    for crd in rendered.values():
        kubernetes_validate.validate(crd, "1.32.0", strict=True)
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_kopf_peering_crds_match_what_kopf_looks_for() -> None:
    from kopf._cogs.structs import references

    rendered = {
        **crds({"peering": {"enabled": True}}),
        **crds({"rbac": {"scope": "namespaced"}, "watchNamespaces": ["a"], "peering": {"enabled": True}}),
    }
    for selector, scope in (
        (references.CLUSTER_PEERINGS_K, "Cluster"),
        (references.NAMESPACED_PEERINGS_K, "Namespaced"),
    ):
        crd = rendered[f"{selector.any_name}.{selector.group}"]
        assert crd["spec"]["scope"] == scope
        assert crd["spec"]["names"]["plural"] == selector.any_name
        assert [v["name"] for v in crd["spec"]["versions"]] == [selector.version]
