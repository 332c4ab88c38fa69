"""The hostile tenant on the REAL API server: the chart's platform policy refuses what reaches out of its lane.

A tenant ServiceAccount that may only create EmbeddingFinetunes in its namespace tries every case of
tests/policy_cases.py (other teams' buckets, foreign endpoints for its Secret, remote code, taints,
priority classes, scratch disk, with case tricks, trailing dots, http for https, IP literals, ``..`` and
``@``). The server's verdict, field and rule must be eft_api.policy's (what the operator enforces when the
admission policies are absent) and ``eft validate --policy``'s. Every rendered NetworkPolicy passes the
server's own validation (a dry run).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from chart_render import by_kind, docs_of, render_files
from controlplane import apply, wait_for
from policy_cases import CASES, SCHEMA, TEAM_A, TEAM_B, resource, values_for

from eft_api import policy

pytestmark = pytest.mark.slow
REFUSAL = re.compile(r"(spec\S*): refused by (policy\.\w+): ")


@pytest.fixture(scope="module")
def tenants(kube: Any, dyn: Any, eft_crd: Any) -> Iterator[dict[str, Any]]:
    """Two tenant namespaces, the chart's policies bound to them, and an API client per tenant ServiceAccount."""
    from kubernetes import client

    core, rbac = client.CoreV1Api(kube), client.RbacAuthorizationV1Api(kube)
    names = {TEAM_A: f"a-{uuid.uuid4().hex[:8]}", TEAM_B: f"b-{uuid.uuid4().hex[:8]}"}
    values = {
        "rbac": {"scope": "namespaced"},
        "watchNamespaces": list(names.values()),
        "fullnameOverride": f"eft-{uuid.uuid4().hex[:6]}",
        "policy": values_for(names[TEAM_A], names[TEAM_B]),
    }
    docs = docs_of(render_files(values))
    vaps = by_kind(docs, "ValidatingAdmissionPolicy") + by_kind(docs, "ValidatingAdmissionPolicyBinding")
    for ns in names.values():
        core.create_namespace({"metadata": {"name": ns}})
        core.create_namespaced_service_account(ns, {"metadata": {"name": "tenant"}})
        rule = {"apiGroups": ["finetune.eft.dev"], "resources": ["embeddingfinetunes"], "verbs": ["create", "get"]}
        rbac.create_namespaced_role(ns, {"metadata": {"name": "tenant"}, "rules": [rule]})
        subject = {"kind": "ServiceAccount", "name": "tenant", "namespace": ns}
        ref = {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tenant"}
        rbac.create_namespaced_role_binding(ns, {"metadata": {"name": "tenant"}, "roleRef": ref, "subjects": [subject]})
    for doc in vaps:
        apply(dyn, doc)
    clients = {}
    for team, ns in names.items():
        tenant = client.ApiClient(kube.configuration)
        tenant.set_default_header("Impersonate-User", f"system:serviceaccount:{ns}:tenant")
        clients[team] = tenant
    try:
        yield {"names": names, "clients": clients, "docs": docs, "values": values}
    finally:
        for doc in reversed(vaps):
            dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"]).delete(name=doc["metadata"]["name"])
        for ns in names.values():
            core.delete_namespace(ns)
        for tenant in clients.values():
            tenant.close()


def _server_verdict(api: Any, namespace: str, doc: dict[str, Any]) -> tuple[str, str] | None:
    """None when the server admits ``doc`` (a dry run as the tenant); else (field, rule) from its message."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            "finetune.eft.dev", "v1alpha1", namespace, "embeddingfinetunes", doc, dry_run="All"
        )
    except ApiException as exc:
        schema = re.search(r"(spec\.[\w.\[\]]+): Invalid value", str(exc.body))
        if exc.status == 422 and schema:  # the CRD's schema: bad input before any policy
            return schema.group(1), SCHEMA
        found = REFUSAL.search(str(exc.body))
        assert exc.status == 403 and found, (exc.status, exc.body)
        return found.group(1), found.group(2)
    return None


def test_the_server_refuses_each_attack_naming_the_field_and_rule_as_the_operator_does(
    tenants: dict[str, Any],
) -> None:
    names, clients = tenants["names"], tenants["clients"]
    platform = policy.load(tenants["values"]["policy"])
    probe = resource(CASES[2])  # team-b naming team-a's bucket
    wait_for(lambda: _server_verdict(clients[TEAM_B], names[TEAM_B], probe) is not None, 30, what="the policy active")
    disagreements = []
    for case in CASES:
        ns = names[case.namespace]
        doc = resource(case)
        server = _server_verdict(clients[case.namespace], ns, doc)
        first = policy.first_violation(doc, platform.for_namespace(ns))
        local = None if first is None else (first.field, first.rule)
        if case.refused is not None and case.refused[1] == SCHEMA:
            local = case.refused if first is not None else None  # the policy refuses it too, as its own rule
        if not (server == local == case.refused):
            disagreements.append((case.id, case.refused, server, local))
    assert not disagreements


def test_the_tenant_may_not_change_the_policy(tenants: dict[str, Any]) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = client.AdmissionregistrationV1Api(tenants["clients"][TEAM_A])
    with pytest.raises(ApiException) as refused:
        api.delete_validating_admission_policy_binding(tenants["values"]["fullnameOverride"] + "-platform-policy")
    assert refused.value.status == 403


def test_every_rendered_network_policy_passes_the_servers_validation(dyn: Any, tenants: dict[str, Any]) -> None:
    variants = [
        tenants["values"],
        {**tenants["values"], "networkPolicy": {"s3": {"cidrs": ["10.0.0.0/8"]}, "llm": {"cidrs": ["0.0.0.0/0"]}}},
        {
            **tenants["values"],
            "networkPolicy": {
                "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
            },
        },
    ]
    for values in variants:
        nps = by_kind(docs_of(render_files(values)), "NetworkPolicy")
        assert len(nps) == 2
        for doc in nps:
            apply(dyn, doc, dry_run=True)
            egress = [b["ipBlock"] for r in doc["spec"]["egress"] for b in r.get("to", []) if "ipBlock" in b]
            assert all(b.get("except") == ["169.254.169.254/32"] for b in egress if b["cidr"] == "0.0.0.0/0")
