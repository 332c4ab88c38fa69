"""Render the Helm chart offline (helm-python-sdk) and split the output into Kubernetes objects.

Shared by the chart tests; the scenarios are the matrix of values every test runs over.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import helm_python
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "charts" / "embedding-finetune-operator"
RELEASE = "eft"
NAMESPACE = "eft-system"

#: The matrix of values: defaults, namespaced RBAC, every integration on, images by digest, peering.
SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "namespaced": {"rbac": {"scope": "namespaced"}, "watchNamespaces": ["team-a", "team-b"]},
    "integrations": {
        "trainerNamespaces": ["ml"],
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "podMonitor": {"enabled": True},
        "grafanaDashboard": {"enabled": True, "namespace": "monitoring"},
        "networkPolicy": {
            "enabled": True,
            "s3": {"cidrs": ["10.20.0.0/16", "192.168.7.10/32"], "port": 9000},
            "llm": {"cidrs": ["10.30.0.5/32"], "port": 8000},
            "metricsFrom": [{"namespaceSelector": {}}],
        },
        "kueue": {"defaultQueueName": "gpu-queue"},
    },
    "digest": {
        "image": {"digest": "sha256:" + "a" * 64, "tag": "ignored"},
        "trainer": {"image": {"registry": "registry.example.com", "digest": "sha256:" + "b" * 64}},
    },
    "peering": {"peering": {"enabled": True}},
    "ha": {"replicaCount": 2},
    "namespaced-peering-integrations": {
        "rbac": {"scope": "namespaced"},
        "watchNamespaces": ["team-a", "team-b"],
        "replicaCount": 3,
        "peering": {"enabled": True},
        "podMonitor": {"enabled": True},
        "networkPolicy": {"enabled": True, "s3": {"cidrs": ["10.20.0.0/16"]}},
    },
    "crds-off": {"crds": {"enabled": False}, "peering": {"enabled": True}},
}


@functools.cache
def chart() -> helm_python.Chart:
    return helm_python.Chart.load(CHART_DIR)


def render_files(values: dict[str, Any]) -> dict[str, str]:
    """Template path -> rendered text (NOTES.txt included)."""
    # A JSON round trip gives the native library its own copy and keeps the cache key out of it.
    return chart().render(json.loads(json.dumps(values)), name=RELEASE, namespace=NAMESPACE)


def objects(files: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """(template path, object) for every non-empty YAML document of every template except NOTES.txt."""
    out: list[tuple[str, dict[str, Any]]] = []
    for path, text in sorted(files.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                out.append((path, doc))
    return out


def docs_of(files: dict[str, str]) -> list[dict[str, Any]]:
    return [doc for _, doc in objects(files)]


@functools.cache
def _render_scenario(name: str) -> str:
    return json.dumps(render_files(SCENARIOS[name]))


def scenario_files(name: str) -> dict[str, str]:
    files: dict[str, str] = json.loads(_render_scenario(name))
    return files


def scenario_objects(name: str) -> list[dict[str, Any]]:
    return docs_of(scenario_files(name))


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def env_of(deployment: dict[str, Any]) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"]}


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(object name, pod spec) of every workload that runs pods."""
    specs: list[tuple[str, dict[str, Any]]] = []
    for d in docs:
        kind = d["kind"]
        if kind == "Pod":
            specs.append((d["metadata"]["name"], d["spec"]))
        elif kind in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
            specs.append((d["metadata"]["name"], d["spec"]["template"]["spec"]))
        elif kind == "CronJob":
            specs.append((d["metadata"]["name"], d["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
    return specs
