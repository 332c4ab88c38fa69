"""The operator against kmock with the real kopf loop: create, status transitions, supersede, restart, 409s."""

from __future__ import annotations

from typing import Any

from conftest import NS, TEST_IMAGE, Cluster, Operator, resource


async def test_create_makes_configmap_and_job_with_owner(cluster: Cluster, operator: Operator) -> None:
    doc = resource("demo", uid="uid-demo")
    await cluster.create(doc)
    jobs = await cluster.wait(lambda: cluster.jobs("demo"), what="the Job")
    job = jobs[0]
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-demo"
    assert job["metadata"]["ownerReferences"][0]["controller"] is True
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == TEST_IMAGE
    cms = [c for c in cluster.objects("configmaps") if c["metadata"]["name"] == job["metadata"]["name"]]
    assert cms and cms[0]["metadata"]["ownerReferences"][0]["uid"] == "uid-demo"
    await cluster.wait(lambda: cluster.condition("demo", "Reconciling").get("reason") == "JobCreated")
    st: Any = cluster.eft("demo")["status"]
    assert st["observedGeneration"] == 1 and st["currentRun"]["jobName"] == job["metadata"]["name"]
    await cluster.wait(lambda: "RunCreated" in cluster.event_reasons("demo"), what="RunCreated")
    assert NS
