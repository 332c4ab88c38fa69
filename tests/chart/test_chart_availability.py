"""The chart's parts of high availability and clean uninstall: replicas with a PodDisruptionBudget, the
leader Lease's RBAC (one name, one namespace), the pre-delete hook that releases the operator's finalizers."""

from __future__ import annotations

from typing import Any

import pytest
from chart_render import NAMESPACE, by_kind, docs_of, env_of, one, render_files, scenario_objects


def test_two_replicas_elect_a_leader_and_keep_one_through_a_drain() -> None:
    docs = scenario_objects("ha")
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    env = env_of(deployment)
    assert env["EFT_LEADER_ELECTION"] == "true" and env["EFT_LEASE_NAMESPACE"] == NAMESPACE
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    hook_pod = one(docs, "Job")["spec"]["template"]["metadata"]["labels"]
    assert not pdb["spec"]["selector"]["matchLabels"].items() <= hook_pod.items()  # the hook is not counted
    assert not deployment["spec"]["selector"]["matchLabels"].items() <= hook_pod.items()
    # One replica: no budget (it would block every drain).
    assert by_kind(scenario_objects("defaults"), "PodDisruptionBudget") == []
    assert (
        by_kind(
            docs_of(render_files({"replicaCount": 2, "podDisruptionBudget": {"enabled": False}})), "PodDisruptionBudget"
        )
        == []
    )


def test_the_lease_rbac_names_one_lease_in_the_release_namespace() -> None:
    docs = scenario_objects("ha")
    lease = env_of(one(docs, "Deployment"))["EFT_LEASE_NAME"]
    (role,) = [r for r in by_kind(docs, "Role") if r["metadata"]["name"].endswith("-leader-election")]
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": [lease],
            "verbs": ["get", "update", "patch"],
        },
    ]
    binding = next(b for b in by_kind(docs, "RoleBinding") if b["roleRef"]["name"] == role["metadata"]["name"])
    sa = one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]
    off = docs_of(render_files({"leaderElection": {"enabled": False}}))
    assert env_of(one(off, "Deployment"))["EFT_LEADER_ELECTION"] == "false"
    assert one(off, "Deployment")["spec"]["strategy"]["type"] == "Recreate"
    assert not [r for r in by_kind(off, "Role") if r["metadata"]["name"].endswith("-leader-election")]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"leaderElection": {"renewDeadline": 20}}, "leaseDuration > renewDeadline > retryPeriod"),
        ({"leaderElection": {"retryPeriod": 10}}, "leaseDuration > renewDeadline > retryPeriod"),
        ({"replicaCount": 2, "leaderElection": {"enabled": False}}, "needs replicaCount 1"),
    ],
)
def test_unsafe_leader_election_values_are_refused(values: dict[str, Any], message: str) -> None:
    with pytest.raises(Exception, match=message):
        render_files(values)


@pytest.mark.parametrize("scope", ["cluster", "namespaced"])
def test_uninstall_runs_release_finalizers_first(scope: str) -> None:
    values: dict[str, Any] = {"rbac": {"scope": scope}}
    if scope == "namespaced":
        values["watchNamespaces"] = ["team-a", "team-b"]
    docs = docs_of(render_files(values))
    job = one(docs, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete"
    assert "hook-succeeded" in job["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["eft-operator", "release-finalizers"]
    assert container["image"] == one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert pod["serviceAccountName"] == one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    watched = {e["name"]: e["value"] for e in container["env"]}["EFT_WATCH_NAMESPACES"]
    assert watched == ("team-a,team-b" if scope == "namespaced" else "")
    assert by_kind(docs_of(render_files({"uninstall": {"releaseFinalizers": False}})), "Job") == []
