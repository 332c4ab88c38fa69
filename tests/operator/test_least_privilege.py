"""Least privilege, proven: ``eft-operator`` (the real command) under the chart's rendered RBAC, both scopes.

The chart is rendered offline; its ServiceAccounts, (Cluster)Roles and bindings are applied to the real
API server; the operator process logs in with a token of its ServiceAccount (TokenRequest) through a
kubeconfig, exactly as ``eft-operator`` runs outside a cluster. It then lives through a whole life cycle
(pods refused by a quota, a run that succeeds, a spec edit that supersedes it, the resource deleted)
and its log must hold no 403 at all. In namespaced scope it must also start at once (kopf used to list
namespaces cluster-wide, get 403s and start about 15 s late), and every line about the resource names it.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml
from controlplane import ControlPlane, apply
from real_cluster import Kube, pod_succeeded, resource, wait, wait_children_gone

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "embedding-finetune-operator"
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _render(values: dict[str, Any], release: str, namespace: str) -> list[dict[str, Any]]:
    files = helm_python.Chart.load(CHART).render(values, name=release, namespace=namespace)
    docs = []
    for path, text in sorted(files.items()):
        if not path.endswith("NOTES.txt"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def _token_kubeconfig(control_plane: ControlPlane, kube: Any, sa: str, namespace: str, path: Path) -> Path:
    from kubernetes import client

    token = client.CoreV1Api(kube).create_namespaced_service_account_token(
        sa, namespace, {"spec": {"expirationSeconds": 3600}}
    )
    ca = base64.b64encode((control_plane.pki / "ca.crt").read_bytes()).decode()
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "envtest", "cluster": {"server": control_plane.server, "certificate-authority-data": ca}}
        ],
        "users": [{"name": sa, "user": {"token": token.status.token}}],
        "contexts": [{"name": "envtest", "context": {"cluster": "envtest", "user": sa}}],
        "current-context": "envtest",
    }
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path


#: Grants whose code path this life cycle does not take, and the path.
NOT_IN_THE_LIFE_CYCLE = {
    ("", "configmaps", "get"): "ensure(): after a 409 (restart between create and record) the child is read",
    ("", "services", "get"): "ensure() of a multi-node run's headless Service after a 409",
    ("", "services", "create"): "a multi-node run's headless Service (spec.resources.nodes > 1)",
    ("networking.k8s.io", "networkpolicies", "get"): "ensure() of a multi-node run's NetworkPolicy after a 409",
    ("networking.k8s.io", "networkpolicies", "create"): "a multi-node run's NetworkPolicy (its own pods only)",
    ("batch", "jobs", "delete"): "a spec edit while a run is still going stops its Job (Superseded)",
    ("finetune.eft.dev", "embeddingfinetunes", "patch"): (
        "kopf's progress record of a handler that must retry (an API outage: test_availability_real); a handler "
        "that succeeds at once patches nothing on the resource (eft_operator.handlers.ProgressAnnotations)"
    ),
    ("finetune.eft.dev", "embeddingfinetunes/finalizers", "update"): (
        "blockOwnerDeletion on children where OwnerReferencesPermissionEnforcement is on (not in envtest)"
    ),
}


def _granted(docs: list[dict[str, Any]], sa: str) -> set[tuple[str, str, str]]:
    """(apiGroup, resource, verb) of every grant of the (Cluster)Roles the chart binds to ServiceAccount ``sa``."""
    bound = {
        (d["roleRef"]["kind"], d["roleRef"]["name"])
        for d in docs
        if d["kind"] in ("ClusterRoleBinding", "RoleBinding")
        and any(s.get("kind") == "ServiceAccount" and s.get("name") == sa for s in d.get("subjects") or [])
    }
    return {
        (group, resource, verb)
        for d in docs
        if d["kind"] in ("ClusterRole", "Role") and (d["kind"], d["metadata"]["name"]) in bound
        for rule in d["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


@pytest.mark.slow
@pytest.mark.parametrize("scope", ["cluster", "namespaced"])
def test_the_operator_needs_nothing_beyond_the_charts_rbac(
    scope: str, control_plane: ControlPlane, kube: Any, dyn: Any, eft_crd: Any, kube_namespace: str, tmp_path: Path
) -> None:
    from kubernetes import client

    k = Kube(kube, kube_namespace)
    release_ns = f"eft-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(kube).create_namespace({"metadata": {"name": release_ns}})
    values: dict[str, Any] = {
        "fullnameOverride": f"lp-{uuid.uuid4().hex[:6]}",
        "admissionPolicy": {"enabled": False},
        "crds": {"enabled": False},
    }
    if scope == "namespaced":
        values.update(rbac={"scope": "namespaced"}, watchNamespaces=[kube_namespace])
    else:
        values["trainerNamespaces"] = [kube_namespace]
    docs = _render(values, "lp", release_ns)
    for doc in docs:
        if doc["kind"] in RBAC_KINDS:
            apply(dyn, doc)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    sa = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    kubeconfig = _token_kubeconfig(control_plane, kube, sa, release_ns, tmp_path / "kubeconfig")
    env = {e["name"]: e["value"] for e in container["env"]}
    env.update(
        KUBECONFIG=str(kubeconfig),
        EFT_METRICS_PORT=str(free_port()),
        EFT_HEALTH_PORT=str(free_port()),
        PYTHONPATH=os.pathsep.join([str(REPO / "operator"), str(REPO / "trainer_image")]),
        PATH=os.environ.get("PATH", ""),
        HOME=str(tmp_path),
    )
    log = tmp_path / "operator.log"

    quota = k.quota({"pods": "0"})
    started = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "eft_operator"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        k.create(resource("lp"))
        wait(lambda: k.jobs("lp"), 60, "the Job")  # the operator process starts first (slow on a loaded machine)
        first_job = time.monotonic() - started
        # Pods refused by a quota: the operator reads the Job's FailedCreate Events.
        cond = wait(lambda: (c := k.condition("lp", "Stalled")) and c["reason"] == "PodCreationRefused" and c, 30)
        assert "exceeded quota" in cond["message"]
        k.core.delete_namespaced_resource_quota(quota, k.ns)
        pod = wait(lambda: k.pods("lp"), 120, "the pod once the quota is gone")[0]  # the Job controller backs off
        rid = k.eft("lp")["status"]["currentRun"]["id"]
        k.set_pod_status(pod["metadata"]["name"], pod_succeeded(rid))
        wait(lambda: k.condition("lp", "Ready").get("status") == "True", 30, "Ready")
        wait(lambda: not any(p["metadata"].get("finalizers") for p in k.pods("lp")) or not k.pods("lp"), 20)
        # A spec edit: a new run; the superseded run's ConfigMap goes.
        k.patch_eft("lp", {"spec": {"training": {"epochs": 2}}})
        wait(lambda: k.eft("lp")["status"]["currentRun"]["generation"] == 2, 20, "generation 2's run")
        wait(lambda: len(k.configmaps("lp")) == 1, 20, "one ConfigMap")
        # Deleted: its children go, the operator's finalizers included.
        k.delete_eft("lp")
        wait_children_gone(k, "lp")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
    text = log.read_text(errors="replace")
    # "403" as a status, not as the milliseconds of a timestamp (",403").
    # A namespace being deleted by an earlier test refuses new content with a 403 too (the cluster-scope
    # operator sees every namespace): that is not RBAC, and says so.
    forbidden = [
        line
        for line in text.splitlines()
        if re.search(r"(?<![\d,.:])403(?!\d)|[Ff]orbidden", line) and "because it is being terminated" not in line
    ]
    assert forbidden == [], "\n".join(forbidden[:20])
    # Every verb granted is one the code uses: this life cycle used it (the API server's audit log says so),
    # or its code path is one the life cycle does not take (NOT_IN_THE_LIFE_CYCLE says which).
    used = control_plane.requests_of(f"system:serviceaccount:{release_ns}:{sa}")
    granted = _granted(docs, sa)
    assert ("batch", "jobs", "create") in granted and ("batch", "jobs", "create") in used  # not vacuous
    unused = granted - used - set(NOT_IN_THE_LIFE_CYCLE)
    assert unused == set(), f"granted but never used (remove from the chart, or name the code path): {unused}"
    about = [line for line in text.splitlines() if "Created Job" in line]
    assert about and all(f"[{kube_namespace}/lp]" in line for line in about), about
    if scope == "namespaced":
        assert first_job < 10, f"the first Job took {first_job:.1f} s after the operator started"
