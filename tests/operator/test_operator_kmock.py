"""The operator against kmock with the real kopf loop: create, status transitions, supersede, restart, 409s."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import kopf
import pytest
from kube_harness import NS, PLURAL, TEST_IMAGE, Cluster, Operator, resource
from prometheus_client.parser import text_string_to_metric_families
from real_cluster import succeeded_message

from eft_api import contract
from eft_api.spec import API_GROUP, API_VERSION, parse_spec
from eft_operator.render import Owner, owner_reference


def _pod(job: dict[str, Any], suffix: str, container: dict[str, Any], created: str) -> dict[str, Any]:
    labels = dict(job["spec"]["template"]["metadata"]["labels"])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{job['metadata']['name']}-{suffix}",
            "namespace": NS,
            "labels": labels,
            "creationTimestamp": created,
        },
        "spec": job["spec"]["template"]["spec"],  # the Job's own containers (as the Job controller makes them)
        "status": {"containerStatuses": [{"name": "trainer", **container}]},
    }


def _job_posts(cluster: Cluster) -> int:
    return sum(
        1
        for r in list(cluster.km)
        if r.resource is not None and r.resource.plural == "jobs" and str(r.method).upper().endswith("POST")
    )


async def _pass_after(cluster: Cluster, operator: Operator, action: Any) -> None:
    """Do ``action`` (which wakes the operator) and wait until a whole pass has run after it."""
    before = _passes(operator)
    await action()
    await cluster.wait(lambda: _passes(operator) > before, what="a pass after the change")


def _passes(operator: Operator) -> float:
    """Passes that ended well so far (``eft_reconciles_total{result="success"}``)."""
    registry = operator.reconciler.metrics.registry
    return registry.get_sample_value("eft_reconciles_total", {"result": "success"}) or 0.0


async def _created(cluster: Cluster, name: str, uid: str, **spec: Any) -> dict[str, Any]:
    await cluster.create(resource(name, uid=uid, **spec))
    jobs = await cluster.wait(lambda: cluster.jobs(name), what=f"the Job of {name}")
    await cluster.wait(lambda: cluster.condition(name, "Reconciling").get("reason") == "JobCreated", what="JobCreated")
    return dict(jobs[0])


async def test_create_makes_configmap_and_job_with_owner(cluster: Cluster, operator: Operator) -> None:
    job = await _created(cluster, "demo", "uid-demo")
    ref = job["metadata"]["ownerReferences"][0]
    assert (ref["uid"], ref["controller"], ref["blockOwnerDeletion"]) == ("uid-demo", True, True)
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == TEST_IMAGE
    cms = [c for c in cluster.objects("configmaps") if c["metadata"]["name"] == job["metadata"]["name"]]
    assert cms and cms[0]["metadata"]["ownerReferences"][0]["uid"] == "uid-demo"
    config = contract.RunConfig.from_json(cms[0]["data"][contract.RUN_CONFIG_KEY])
    assert config.run.uid == "uid-demo" and config.run.generation == 1
    st: Any = cluster.eft("demo")["status"]
    assert st["observedGeneration"] == 1 and st["currentRun"]["jobName"] == job["metadata"]["name"]
    assert cluster.condition("demo", "Ready")["status"] == "False"
    assert "kopf" not in st  # kopf keeps its state in annotations, not in our status
    assert not cluster.eft("demo")["metadata"].get("finalizers")  # no finalizer: owner references suffice
    await cluster.wait(lambda: "RunCreated" in cluster.event_reasons("demo"), what="RunCreated")


async def test_multi_node_run_gets_its_headless_service_before_the_indexed_job(
    cluster: Cluster, operator: Operator
) -> None:
    job = await _created(cluster, "wide", "uid-wide", resources={"gpus": 0, "cpu": "2", "memory": "6Gi", "nodes": 3})
    assert (job["spec"]["completionMode"], job["spec"]["parallelism"]) == ("Indexed", 3)
    subdomain = job["spec"]["template"]["spec"]["subdomain"]
    (svc,) = [s for s in cluster.objects("services") if s["metadata"]["name"] == subdomain]
    assert svc["spec"]["clusterIP"] == "None" and svc["metadata"]["ownerReferences"][0]["uid"] == "uid-wide"
    assert not [s for s in cluster.objects("services") if "demo" in s["metadata"]["name"]]


async def test_running_then_succeeded_records_history_results_and_events(cluster: Cluster, operator: Operator) -> None:
    job = await _created(cluster, "demo", "uid-1")
    jname, rid = job["metadata"]["name"], job["metadata"]["labels"][contract.LABEL_RUN]
    await cluster.create_pod(_pod(job, "a", {"state": {"running": {}}}, "2026-01-01T00:00:01Z"))
    await cluster.wait(lambda: cluster.condition("demo", "Reconciling").get("reason") == "Running", what="Running")
    ltt = cluster.condition("demo", "Ready")["lastTransitionTime"]
    term = {"terminated": {"exitCode": 0, "reason": "Completed", "message": succeeded_message(rid)}}
    await cluster.patch_pod(f"{jname}-a", {"status": {"containerStatuses": [{"name": "trainer", "state": term}]}})
    await cluster.patch_job(
        jname,
        {"status": {"conditions": [{"type": "Complete", "status": "True"}], "completionTime": "2026-01-01T01:00:00Z"}},
    )
    await cluster.wait(lambda: cluster.condition("demo", "Ready").get("status") == "True", what="Ready")
    st: Any = cluster.eft("demo")["status"]
    assert st["results"] == {
        "runId": rid,
        "primaryMetric": "ndcg@10",
        "dimension": 384,
        "base": 0.531,
        "finetuned": 0.59,
        "gain": 0.059,
    }
    assert st["artifacts"]["model"].endswith("/model/")
    assert [r["phase"] for r in st["runs"]] == ["Succeeded"] and st["runs"][0]["finetuned"] == 0.59
    assert cluster.condition("demo", "Stalled")["status"] == "False"
    assert cluster.condition("demo", "Ready")["lastTransitionTime"] >= ltt
    reasons = await cluster.wait(
        lambda: (r := cluster.event_reasons("demo")) and "RunSucceeded" in r and r, what="RunSucceeded"
    )
    assert reasons.index("RunCreated") < reasons.index("RunStarted") < reasons.index("RunSucceeded")
    msg = next(e["message"] for e in cluster.events("demo") if e["reason"] == "RunSucceeded")
    assert "ndcg@10 0.531 -> 0.590 (+0.059) at 384 dims" in msg
    # Nothing changes when nothing happened: one more Job event leaves status as it was.
    before = json.dumps(cluster.eft("demo")["status"], sort_keys=True)
    n, passes = len(list(cluster.km)), _passes(operator)
    await cluster.patch_job(jname, {"metadata": {"annotations": {"touch": "1"}}})
    await cluster.wait(
        lambda: cluster.fetched_since(n, PLURAL) and _passes(operator) > passes, what="a whole pass after the event"
    )
    assert json.dumps(cluster.eft("demo")["status"], sort_keys=True) == before


FAILURES = [
    (
        "termination message",
        {
            "terminated": {
                "exitCode": 2,
                "reason": "Error",
                "message": contract.TerminationMessage(
                    outcome="Failed", reason="InvalidCorpus", message="s3://bucket/pairs.jsonl line 3: bad JSON"
                ).to_json(),
            }
        },
        "Failed",
        "InvalidCorpus",
        "line 3",
    ),
    ("oom", {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}, "Failed", "OOMKilled", "memory limit (6Gi)"),
    ("deadline", None, "DeadlineExceeded", "DeadlineExceeded", "activeDeadlineSeconds"),
    (
        "backoff",
        {"terminated": {"exitCode": 1, "reason": "Error"}},
        "BackoffLimitExceeded",
        "BackoffLimitExceeded",
        "retries",
    ),
]


@pytest.mark.parametrize(("case", "state", "job_reason", "reason", "text"), FAILURES, ids=[f[0] for f in FAILURES])
async def test_failures_give_stalled_with_reason(
    cluster: Cluster, operator: Operator, case: str, state: Any, job_reason: str, reason: str, text: str
) -> None:
    job = await _created(cluster, "demo", f"uid-{case}")
    jname = job["metadata"]["name"]
    if state is not None:
        await cluster.create_pod(_pod(job, "a", {"state": state}, "2026-01-01T00:00:01Z"))
    await cluster.patch_job(
        jname, {"status": {"conditions": [{"type": "Failed", "status": "True", "reason": job_reason}]}}
    )
    await cluster.wait(lambda: cluster.condition("demo", "Stalled").get("reason") == reason, what=reason)
    assert cluster.condition("demo", "Stalled")["status"] == "True"
    assert text in cluster.condition("demo", "Stalled")["message"]
    st: Any = cluster.eft("demo")["status"]
    assert st["runs"][0]["phase"] == "Failed" and st["runs"][0]["reason"] == reason
    await cluster.wait(lambda: "RunFailed" in cluster.event_reasons("demo"), what="RunFailed")
    assert any(reason in e["message"] for e in cluster.events("demo") if e["reason"] == "RunFailed")


async def test_missing_secret_stalls_until_it_exists(cluster: Cluster, operator: Operator) -> None:
    job = await _created(cluster, "demo", "uid-s")
    waiting = {"reason": "CreateContainerConfigError", "message": 'secret "s3-credentials" not found'}
    await cluster.create_pod(_pod(job, "a", {"state": {"waiting": waiting}}, "2026-01-01T00:00:01Z"))
    await cluster.wait(lambda: cluster.condition("demo", "Stalled").get("reason") == "SecretNotFound")
    await cluster.patch_pod(
        f"{job['metadata']['name']}-a",
        {"status": {"containerStatuses": [{"name": "trainer", "state": {"running": {}}}]}},
    )
    await cluster.wait(lambda: cluster.condition("demo", "Stalled").get("status") == "False", what="unstalled")
    assert cluster.condition("demo", "Reconciling")["reason"] == "Running"


async def test_spec_change_supersedes_running_run(
    cluster: Cluster, operator: Operator, monkeypatch: pytest.MonkeyPatch
) -> None:
    kopf_builds: list[object] = []  # kopf's own essence build deep-copies the whole body on every event
    kopfs_build = kopf.DiffBaseStorage.build
    monkeypatch.setattr(kopf.DiffBaseStorage, "build", lambda *a, **kw: kopf_builds.append(kw) or kopfs_build(*a, **kw))
    job1 = await _created(cluster, "demo", "uid-g")
    await cluster.patch_eft("demo", {"metadata": {"generation": 2}, "spec": {"training": {"epochs": 2}}})
    await cluster.wait(
        lambda: (
            len(cluster.jobs("demo")) == 1 and cluster.jobs("demo")[0]["metadata"]["name"] != job1["metadata"]["name"]
        ),
        what="the new Job only",
    )
    st: Any = await cluster.wait(
        lambda: (s := cluster.eft("demo")["status"]) and s["currentRun"]["generation"] == 2 and s
    )
    assert st["observedGeneration"] == 2
    assert st["runs"][0]["phase"] == "Superseded" and st["runs"][0]["generation"] == 1
    await cluster.wait(lambda: "RunSuperseded" in cluster.event_reasons("demo"), what="RunSuperseded")
    # Metadata alone (a label added by GitOps tooling, say) starts nothing, even when the operator looks
    # at the labelled resource: a pod event makes it reconcile after the label change.
    job2 = cluster.jobs("demo")[0]
    await cluster.patch_eft("demo", {"metadata": {"labels": {"team": "a"}}})
    await _pass_after(
        cluster,
        operator,
        lambda: cluster.create_pod(_pod(job2, "x", {"state": {"running": {}}}, "2026-01-01T00:00:02Z")),
    )
    assert [j["metadata"]["name"] for j in cluster.jobs("demo")] == [job2["metadata"]["name"]]
    assert cluster.eft("demo")["status"]["currentRun"]["generation"] == 2
    assert kopf_builds == [], "the operator's own diffbase builds every essence, with the extra fields it gets"


async def test_invalid_spec_gives_condition_and_no_job(cluster: Cluster, operator: Operator) -> None:
    doc = resource("bad", uid="uid-bad")
    doc["spec"]["training"] = {"loss": "CoSENT"}
    await cluster.create(doc)
    cond = await cluster.wait(lambda: (c := cluster.condition("bad", "Stalled")) and c, what="Stalled")
    assert cond["reason"] == "InvalidSpec" and "spec.training.loss" in cond["message"]
    assert cluster.jobs("bad") == []
    await cluster.wait(lambda: "InvalidSpec" in cluster.event_reasons("bad"))


async def test_conflict_with_own_child_is_adopted_and_foreign_child_is_not(
    cluster: Cluster, operator: Operator
) -> None:
    # Ours already there (the operator died after creating it): read back, no second Job.
    mine = Owner.of(NS, "mine", "uid-mine", 1, parse_spec(resource("mine")["spec"]))
    await cluster.create_job(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": mine.child_name,
                "namespace": NS,
                "ownerReferences": [owner_reference(mine)],
                "labels": {
                    contract.LABEL_NAME: "mine",
                    contract.LABEL_RUN: mine.run_id,
                    contract.LABEL_MANAGED_BY: contract.MANAGED_BY,
                },
            },
            "spec": {"suspend": False},
        }
    )
    await cluster.create(resource("mine", uid="uid-mine"))
    await cluster.wait(lambda: cluster.condition("mine", "Reconciling").get("reason") == "JobCreated")
    assert len(cluster.jobs("mine")) == 1
    # Someone else's Job under our name: never adopted; a condition says so.
    other = Owner.of(NS, "theirs", "uid-theirs", 1, parse_spec(resource("theirs")["spec"]))
    foreign = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": other.child_name,
            "namespace": NS,
            "ownerReferences": [{**owner_reference(other), "uid": "someone-else", "name": "x"}],
        },
        "spec": {},
    }
    await cluster.create_job(foreign)
    await cluster.create(resource("theirs", uid="uid-theirs"))
    cond = await cluster.wait(lambda: (c := cluster.condition("theirs", "Stalled")) and c, what="conflict")
    assert cond["reason"] == "ChildNameConflict" and "someone-else" in cond["message"]
    job = next(j for j in cluster.objects("jobs") if j["metadata"]["name"] == other.child_name)
    assert [r["uid"] for r in job["metadata"]["ownerReferences"]] == ["someone-else"]


async def test_restart_mid_run_keeps_one_job_and_converges(cluster: Cluster, operator: Operator) -> None:
    job = await _created(cluster, "demo", "uid-r")
    await operator.stop()
    await cluster.create_pod(_pod(job, "a", {"state": {"running": {}}}, "2026-01-01T00:00:01Z"))
    again = Operator(cluster, operator.settings)  # a new process: fresh memory, fresh ports
    await again.start()
    try:
        await cluster.wait(lambda: cluster.condition("demo", "Reconciling").get("reason") == "Running", what="Running")
    finally:
        await again.stop()
    assert [j["metadata"]["name"] for j in cluster.jobs("demo")] == [job["metadata"]["name"]]
    assert _job_posts(cluster) == 1


async def test_suspend_and_resume(cluster: Cluster, operator: Operator) -> None:
    job = await _created(cluster, "demo", "uid-p")
    jname = job["metadata"]["name"]
    await cluster.patch_eft("demo", {"metadata": {"generation": 2}, "spec": {"runPolicy": {"suspend": True}}})
    await cluster.wait(lambda: cluster.jobs("demo")[0]["spec"]["suspend"] is True, what="Job suspended")
    await cluster.wait(lambda: cluster.condition("demo", "Reconciling").get("reason") == "Suspended")
    await cluster.patch_eft("demo", {"metadata": {"generation": 3}, "spec": {"runPolicy": {"suspend": False}}})
    await cluster.wait(lambda: cluster.jobs("demo")[0]["spec"]["suspend"] is False, what="Job resumed")
    assert [j["metadata"]["name"] for j in cluster.jobs("demo")] == [jname]  # same run, no new Job
    await cluster.wait(lambda: cluster.eft("demo")["status"]["observedGeneration"] == 3)


async def test_metrics_and_health_endpoints(cluster: Cluster, operator: Operator) -> None:
    job = await _created(cluster, "demo", "uid-m")
    rid = job["metadata"]["labels"][contract.LABEL_RUN]
    term = {"terminated": {"exitCode": 0, "reason": "Completed", "message": succeeded_message(rid)}}
    await cluster.create_pod(_pod(job, "a", {"state": term}, "2026-01-01T00:00:01Z"))
    await cluster.patch_job(
        job["metadata"]["name"], {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    )
    await cluster.wait(lambda: cluster.condition("demo", "Ready").get("status") == "True")
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{operator.metrics_port}/metrics") as resp:
            text = await resp.text()
        async with s.get(f"http://127.0.0.1:{operator.health_port}/healthz") as resp:
            assert resp.status == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    assert samples[("eft_reconciles_total", (("result", "success"),))] >= 2
    assert samples[("eft_runs", (("phase", "Succeeded"),))] == 1
    assert samples[("eft_headline_metric", (("model", "finetuned"), ("name", "demo"), ("namespace", NS)))] == 0.59
    assert samples[("eft_reconcile_duration_seconds_count", ())] >= 2

    # A deleted resource leaves no series behind: per-resource labels stay bounded.
    await cluster.delete_eft("demo")

    async def scrape() -> str:
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{operator.metrics_port}/metrics") as resp:
            return await resp.text()

    deadline = asyncio.get_running_loop().time() + 10
    while 'name="demo"' in (text := await scrape()):
        assert asyncio.get_running_loop().time() < deadline, "the deleted resource's series stayed"
        await asyncio.sleep(0.05)
    assert "eft_reconciles_total" in text
    # ... and no diffbase (kopf's last handled essence, kept in the operator's memory).
    assert operator.reconciler.kopf_settings.persistence.diffbase_storage.handled() == 0


async def test_api_errors_on_create_and_status_retry_boundedly_and_converge(
    cluster: Cluster, operator: Operator
) -> None:
    """503 on the Job creation (kmock stores the Job anyway: the write happened, the answer was lost) and
    429 with Retry-After on the first status patch: the operator retries with backoff, resolves the 409 of
    its own retry by reading the Job and checking its owner, and ends with one Job and its status."""
    km = cluster.km
    km[f"post /apis/batch/v1/namespaces/{NS}/jobs"][:2] << 503 << b'{"kind": "Status", "code": 503}'
    (
        km[f"patch /apis/{API_GROUP}/{API_VERSION}/namespaces/{NS}/{PLURAL}/flaky/status"][:1]
        << 429
        << {"Retry-After": "1"}
        << b'{"kind": "Status", "code": 429}'
    )
    await cluster.create(resource("flaky", uid="uid-flaky"))
    await cluster.wait(
        lambda: cluster.condition("flaky", "Reconciling").get("reason") == "JobCreated", timeout=30, what="JobCreated"
    )
    jobs = cluster.jobs("flaky")
    assert len(jobs) == 1
    assert jobs[0]["metadata"]["ownerReferences"][0]["uid"] == "uid-flaky"
    assert _job_posts(cluster) == 2  # refused with 503 (but stored), then the retry's 409
    assert cluster.fetched_since(0, "jobs")  # the 409 was resolved by reading the Job and its owner
    assert cluster.condition("flaky", "Stalled").get("status") != "True"


async def test_job_deleted_mid_run_fails_the_run_once_with_an_event(cluster: Cluster, operator: Operator) -> None:
    """Someone deletes the Job mid-run: the run ends Failed/JobDeleted (documented), no second Job, an Event."""
    job = await _created(cluster, "demo", "uid-del")
    await cluster.create_pod(_pod(job, "a", {"state": {"running": {}}}, "2026-01-01T00:00:01Z"))
    await cluster.wait(lambda: cluster.condition("demo", "Reconciling").get("reason") == "Running", what="Running")
    await cluster.delete_job(job["metadata"]["name"])
    cond = await cluster.wait(lambda: (c := cluster.condition("demo", "Stalled")) and c["status"] == "True" and c)
    assert cond["reason"] == "JobDeleted"
    await cluster.wait(lambda: "RunFailed" in cluster.event_reasons("demo"), what="RunFailed")
    await cluster.wait(lambda: cluster.jobs("demo") == [], what="the Job gone (its finalizer released)")
    # The same generation never runs twice: a later pass (woken by the pod) creates no second Job.
    pod = f"{job['metadata']['name']}-a"
    await _pass_after(cluster, operator, lambda: cluster.patch_pod(pod, {"metadata": {"labels": {"touch": "1"}}}))
    assert cluster.jobs("demo") == [] and _job_posts(cluster) == 1
    assert cluster.eft("demo")["status"]["runs"][0]["reason"] == "JobDeleted"


async def test_spec_edited_twice_while_down_runs_only_the_latest(cluster: Cluster, operator: Operator) -> None:
    job1 = await _created(cluster, "demo", "uid-twice")
    await operator.stop()
    await cluster.patch_eft("demo", {"metadata": {"generation": 2}, "spec": {"training": {"epochs": 2}}})
    await cluster.patch_eft("demo", {"metadata": {"generation": 3}, "spec": {"training": {"epochs": 3}}})
    again = Operator(cluster, operator.settings)
    await again.start()
    try:
        st: Any = await cluster.wait(
            lambda: (s := cluster.eft("demo").get("status")) and s["currentRun"]["generation"] == 3 and s,
            what="generation 3's run",
        )
    finally:
        await again.stop()
    jobs = cluster.jobs("demo")
    assert len(jobs) == 1 and jobs[0]["metadata"]["name"] != job1["metadata"]["name"]
    assert jobs[0]["metadata"]["labels"][contract.LABEL_GENERATION] == "3"
    assert st["observedGeneration"] == 3
    assert [(r["generation"], r["phase"]) for r in st["runs"]] == [(1, "Superseded")]
