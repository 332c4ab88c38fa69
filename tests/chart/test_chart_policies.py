"""Security review as tests: least-privilege RBAC, restricted pods, no service-account token for trainers."""

from __future__ import annotations

from typing import Any

import pytest
from chart_render import NAMESPACE, SCENARIOS, by_kind, env_of, one, pod_specs, scenario_objects

RBAC_KINDS = ("ClusterRole", "Role")

#: Everything the operator may do, per (apiGroup, resource): the issue's list and nothing more.
ALLOWED: dict[tuple[str, str], set[str]] = {
    ("finetune.eft.dev", "embeddingfinetunes"): {"get", "list", "watch", "patch"},
    ("finetune.eft.dev", "embeddingfinetunes/status"): {"get", "patch", "update"},
    ("finetune.eft.dev", "embeddingfinetunes/finalizers"): {"update"},
    ("batch", "jobs"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "configmaps"): {"get", "list", "watch", "create", "patch", "delete"},
    ("", "services"): {"get", "create"},  # the headless Service of a multi-node run (owned: GC deletes it)
    ("", "pods"): {"get", "list", "watch", "patch"},
    ("", "events"): {"list", "create", "patch"},
    ("events.k8s.io", "events"): {"create", "patch"},
    ("apiextensions.k8s.io", "customresourcedefinitions"): {"get", "list", "watch"},
    ("", "namespaces"): {"get", "list", "watch"},
    ("kopf.dev", "clusterkopfpeerings"): {"get", "list", "watch", "patch"},
    ("kopf.dev", "kopfpeerings"): {"get", "list", "watch", "patch"},
    # Leader election: the one Lease in the release namespace (leader-election-role.yaml).
    ("coordination.k8s.io", "leases"): {"create", "get", "update", "patch"},
}
LEADER_ELECTION = ("coordination.k8s.io", "leases")


def operator_roles(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Roles of the watched namespaces (not the leader-election Role in the release namespace)."""
    return [r for r in by_kind(docs, "Role") if not r["metadata"]["name"].endswith("-leader-election")]


CLUSTER_SCOPED = {
    ("apiextensions.k8s.io", "customresourcedefinitions"),
    ("", "namespaces"),
    ("kopf.dev", "clusterkopfpeerings"),
}


def grants(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_rbac_has_no_wildcards_and_no_secret_access(scenario: str) -> None:
    roles = [r for kind in RBAC_KINDS for r in by_kind(scenario_objects(scenario), kind)]
    assert roles
    for role in roles:
        for rule in role["rules"]:
            assert "nonResourceURLs" not in rule
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert all("*" not in item for item in rule.get(field, [])), (role["metadata"]["name"], rule)
            assert not any(r.split("/")[0] == "secrets" for r in rule["resources"]), rule
        for key, verbs in grants(role).items():
            assert key in ALLOWED, f"{role['kind']} {role['metadata']['name']} grants {key}"
            assert verbs <= ALLOWED[key], f"{key}: {verbs - ALLOWED[key]} beyond least privilege"


def test_cluster_scope_grants_everything_the_operator_needs_cluster_wide() -> None:
    docs = scenario_objects("defaults")
    assert not operator_roles(docs)
    role = one(docs, "ClusterRole")
    expected = {k: v for k, v in ALLOWED.items() if k[0] != "kopf.dev" and k != LEADER_ELECTION}
    assert grants(role) == expected
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    sa = one(docs, "ServiceAccount")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}]


def test_namespaced_scope_gives_a_role_per_namespace_and_only_crd_reads_cluster_wide() -> None:
    docs = scenario_objects("namespaced")
    cluster_role = one(docs, "ClusterRole")
    assert grants(cluster_role) == {("apiextensions.k8s.io", "customresourcedefinitions"): {"get", "list", "watch"}}
    roles = operator_roles(docs)
    bindings = [b for b in by_kind(docs, "RoleBinding") if not b["metadata"]["name"].endswith("-leader-election")]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["team-a", "team-b"]
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["team-a", "team-b"]
    expected = {
        k: v for k, v in ALLOWED.items() if k not in CLUSTER_SCOPED and k[0] != "kopf.dev" and k != LEADER_ELECTION
    }
    operator_sa = next(s for s in by_kind(docs, "ServiceAccount") if s["metadata"]["namespace"] == NAMESPACE)
    for role in roles:
        assert grants(role) == expected
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": operator_sa["metadata"]["name"], "namespace": NAMESPACE}
        ]


def test_rbac_create_false_renders_no_rbac() -> None:
    from chart_render import docs_of, render_files

    docs = docs_of(render_files({"rbac": {"create": False}}))
    assert not [d for d in docs if d["apiVersion"].startswith("rbac.authorization.k8s.io")]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_pod_meets_restricted_with_a_read_only_root(scenario: str) -> None:
    specs = pod_specs(scenario_objects(scenario))
    assert specs
    for name, pod in specs:
        pod_sc = pod.get("securityContext", {})
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), name
        for volume in pod.get("volumes", []):
            assert "hostPath" not in volume, name
        for container in pod["containers"] + pod.get("initContainers", []):
            sc = container.get("securityContext", {})

            def effective(key: str, sc: dict[str, Any] = sc, pod_sc: dict[str, Any] = pod_sc) -> Any:
                return sc.get(key, pod_sc.get(key))

            assert effective("runAsNonRoot") is True, name
            assert (effective("runAsUser") or 0) != 0, name
            assert sc.get("allowPrivilegeEscalation") is False, name
            assert sc.get("privileged") in (None, False), name
            assert sc.get("readOnlyRootFilesystem") is True, name
            assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add"), name
            assert (effective("seccompProfile") or {}).get("type") == "RuntimeDefault", name
            assert "ports" not in container or all("hostPort" not in p for p in container["ports"]), name


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_trainer_service_accounts_mount_no_token(scenario: str) -> None:
    docs = scenario_objects(scenario)
    deployment = one(docs, "Deployment")
    trainer_sa = env_of(deployment)["EFT_TRAINER_SERVICE_ACCOUNT"]
    accounts = by_kind(docs, "ServiceAccount")
    trainers = [sa for sa in accounts if sa["metadata"]["name"] == trainer_sa]
    if trainer_sa:
        assert trainers, f"{trainer_sa} is passed to the operator but not created"
    for sa in trainers:
        assert sa["automountServiceAccountToken"] is False
    for sa in accounts:
        if sa not in trainers:
            # Only the operator's own account mounts a token: it calls the API server.
            assert sa["metadata"]["name"] == deployment["spec"]["template"]["spec"]["serviceAccountName"]
            assert sa["metadata"]["namespace"] == NAMESPACE


def test_trainer_service_account_is_in_every_trainer_namespace() -> None:
    namespaced = {sa["metadata"]["namespace"] for sa in by_kind(scenario_objects("namespaced"), "ServiceAccount")}
    assert namespaced == {NAMESPACE, "team-a", "team-b"}
    integrations = {sa["metadata"]["namespace"] for sa in by_kind(scenario_objects("integrations"), "ServiceAccount")}
    assert integrations == {NAMESPACE, "ml"}
    # Cluster scope without trainerNamespaces: trainer pods use each namespace's default account.
    assert env_of(one(scenario_objects("defaults"), "Deployment"))["EFT_TRAINER_SERVICE_ACCOUNT"] == ""
