"""The chart on a real API server (envtest, v1.36): every object of every scenario passes a server-side dry
run, and the default install applies for real, its operator Pod admitted under Pod Security "restricted".

Objects of CRDs a bare cluster does not have (ServiceMonitor, PodMonitor) cannot be dry-run here; they stay
checked structurally by test_chart_render.py.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from chart_render import NAMESPACE, SCENARIOS, scenario_objects
from controlplane import apply, wait_for

#: Namespaces the scenarios name (a platform team creates them; the chart does not).
NAMESPACES = (NAMESPACE, "team-a", "team-b", "ml", "monitoring")


@pytest.fixture(scope="module")
def cluster_ready(kube: Any, dyn: Any, eft_crd: dict[str, Any]) -> Any:
    from kubernetes import client

    core = client.CoreV1Api(kube)
    for name in NAMESPACES:
        labels = {"pod-security.kubernetes.io/enforce": "restricted"} if name == NAMESPACE else {}
        core.create_namespace({"metadata": {"name": name, "labels": labels}})
    # The chart's CRDs first, for real: the objects of those kinds can only be judged once they exist.
    for scenario in SCENARIOS:
        for doc in scenario_objects(scenario):
            if doc["kind"] == "CustomResourceDefinition":
                apply(dyn, doc)
    dyn.resources.invalidate_cache()
    return dyn


def _served(dyn: Any, doc: dict[str, Any]) -> bool:
    from kubernetes.dynamic.exceptions import ResourceNotFoundError

    try:
        dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        return True
    except ResourceNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_object_passes_a_server_side_dry_run(cluster_ready: Any, scenario: str) -> None:
    checked, unserved = 0, set()
    for doc in scenario_objects(scenario):
        if not _served(cluster_ready, doc):
            unserved.add(doc["kind"])
            continue
        apply(cluster_ready, doc, namespace=NAMESPACE, dry_run=True)
        checked += 1
    assert checked >= 5
    assert unserved <= {"ServiceMonitor", "PodMonitor"}, f"kinds the server does not know: {unserved}"


@pytest.mark.slow
def test_default_install_applies_and_its_pod_is_admitted_as_restricted(kube: Any, cluster_ready: Any) -> None:
    """`helm template | kubectl apply` of the defaults: every object applies, and the Deployment's Pod is created
    in a namespace that enforces Pod Security "restricted" (the ReplicaSet would report FailedCreate otherwise)."""
    docs = sorted(scenario_objects("defaults"), key=lambda d: d["kind"] != "CustomResourceDefinition")
    try:
        for doc in docs:
            apply(cluster_ready, doc, namespace=NAMESPACE)
        _operator_pod_is_admitted(kube, docs)
    finally:
        # The install is cluster-wide (ClusterRoles, an admission policy on EmbeddingFinetunes): leave the shared
        # control plane as it was for the tests that follow. CRDs stay (other tests installed them too).
        for doc in reversed(docs):
            if doc["kind"] != "CustomResourceDefinition":
                _delete(cluster_ready, doc)


def _delete(dyn: Any, doc: dict[str, Any]) -> None:
    from kubernetes.dynamic.exceptions import NotFoundError

    resource = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
    namespace = (doc["metadata"].get("namespace") or NAMESPACE) if resource.namespaced else None
    with contextlib.suppress(NotFoundError):
        resource.delete(name=doc["metadata"]["name"], namespace=namespace)


def _operator_pod_is_admitted(kube: Any, docs: list[dict[str, Any]]) -> None:
    from kubernetes import client

    deployment = next(d for d in docs if d["kind"] == "Deployment")
    core = client.CoreV1Api(kube)
    selector = ",".join(f"{k}={v}" for k, v in deployment["spec"]["selector"]["matchLabels"].items())

    def pod_created() -> bool:
        return bool(core.list_namespaced_pod(NAMESPACE, label_selector=selector).items)

    try:
        wait_for(pod_created, 30, what="the operator Deployment's Pod")
    except AssertionError:
        events = core.list_namespaced_event(NAMESPACE).items
        raise AssertionError([e.message for e in events if e.reason == "FailedCreate"]) from None
    pod = core.list_namespaced_pod(NAMESPACE, label_selector=selector).items[0]
    assert pod.spec.service_account_name == deployment["spec"]["template"]["spec"]["serviceAccountName"]
