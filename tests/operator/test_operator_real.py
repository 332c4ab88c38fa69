"""The operator on a REAL control plane (envtest v1.36): what real clusters do that kmock does not.

Quotas and admission refuse Jobs and Pods, the Job controller records ``FailedCreate``, the TTL controller
deletes finished Jobs, the garbage collector follows owner references and waits for finalizers. There is
no kubelet and no scheduler: the tests patch Pod status as they would. Each finding of issue 9 has a test
here that failed before its fix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from real_cluster import (
    GC_DEADLINE,
    TEST_IMAGE,
    Kube,
    RealOperator,
    pod_succeeded,
    resource,
    wait,
    wait_children_gone,
)

from eft_api import contract
from eft_operator.config import Settings
from eft_operator.render import OUTCOME_FINALIZER

FAST = {"recheck_delays": (0.5, 1.0, 2.0), "no_pod_grace": 60.0}


@pytest.fixture
def k(kube: Any, eft_crd: Any, kube_namespace: str) -> Kube:
    return Kube(kube, kube_namespace)


@pytest.fixture
def start_operator(control_plane: Any, k: Kube) -> Iterator[Callable[..., RealOperator]]:
    """Start the operator (namespaced to the test's namespace, as the admin unless told otherwise)."""
    running: list[RealOperator] = []

    def start(**options: Any) -> RealOperator:
        settings = options.pop("settings", None) or Settings(trainer_image=TEST_IMAGE, watch_namespaces=(k.ns,))
        op = RealOperator(options.pop("kubeconfig", control_plane.kubeconfig), settings, **{**FAST, **options})
        running.append(op.start())
        return op

    yield start
    for op in running:
        op.stop()


def _run_id(k: Kube, name: str) -> str:
    return str(wait(lambda: (k.eft(name).get("status") or {}).get("currentRun", {}).get("id"), what="a run"))


@pytest.mark.slow
def test_refused_job_stalls_at_once_with_the_api_message_and_clears_when_the_quota_goes(
    k: Kube, start_operator: Callable[..., RealOperator]
) -> None:
    quota = k.quota({"count/jobs.batch": "0"})
    op = start_operator()
    k.create(resource("refused"))
    cond = wait(lambda: (c := k.condition("refused", "Stalled")) and c["status"] == "True" and c, 15, "Stalled")
    assert cond["reason"] == "JobRejected"
    assert "exceeded quota" in cond["message"] and "count/jobs.batch" in cond["message"]
    assert k.condition("refused", "Ready")["reason"] == "JobRejected"
    wait(lambda: "JobRejected" in k.event_reasons("refused"), 10, "a JobRejected Event")
    warning = next(e for e in k.events("refused") if e["reason"] == "JobRejected")
    assert warning["type"] == "Warning" and "exceeded quota" in warning["message"]
    assert k.jobs("refused") == []
    assert op.reconciler.rechecking(k.ns, "refused")  # looked at again on a timer, not given up

    k.core.delete_namespaced_resource_quota(quota, k.ns)
    wait(lambda: k.jobs("refused"), 30, "the Job once the quota is gone")
    wait(lambda: k.condition("refused", "Stalled").get("status") == "False", 15, "Stalled cleared")
    assert k.condition("refused", "Reconciling")["status"] == "True"


@pytest.mark.slow
def test_pods_that_cannot_be_created_stall_the_run_and_clear_when_they_can(
    k: Kube, start_operator: Callable[..., RealOperator]
) -> None:
    quota = k.quota({"pods": "0"})
    start_operator()
    k.create(resource("nopods"))
    wait(lambda: k.jobs("nopods"), 15, "the Job")
    cond = wait(lambda: (c := k.condition("nopods", "Stalled")) and c["status"] == "True" and c, 30, "Stalled")
    assert cond["reason"] == "PodCreationRefused"
    assert "exceeded quota" in cond["message"] and "pods" in cond["message"]
    wait(lambda: "PodCreationRefused" in k.event_reasons("nopods"), 10, "a PodCreationRefused Event")
    assert k.eft("nopods")["status"]["currentRun"]["phase"] == "Pending"

    k.core.delete_namespaced_resource_quota(quota, k.ns)
    wait(lambda: k.pods("nopods"), 120, "the Job controller (backing off) to create the pod")
    wait(lambda: k.condition("nopods", "Stalled").get("status") == "False", 20, "Stalled cleared")


@pytest.mark.slow
def test_a_run_that_finished_while_the_operator_was_down_is_recorded_although_its_ttl_is_zero(
    k: Kube, start_operator: Callable[..., RealOperator]
) -> None:
    op = start_operator()
    k.create(resource("ttl", runPolicy={"ttlSecondsAfterFinished": 0}))
    rid = _run_id(k, "ttl")
    pod = wait(lambda: k.pods("ttl"), 30, "the trainer pod")[0]
    op.stop()

    k.set_pod_status(pod["metadata"]["name"], pod_succeeded(rid))
    # The real Job controller completes the Job and the TTL controller deletes it at once (the
    # operator's finalizer keeps the Job and its pod, with the trainer's termination message).
    wait(
        lambda: not k.jobs("ttl") or k.jobs("ttl")[0]["metadata"].get("deletionTimestamp"),
        30,
        "the TTL controller to delete the Job",
    )
    assert (k.eft("ttl")["status"]["currentRun"]["phase"]) == "Pending"

    start_operator()
    st = wait(lambda: (s := k.eft("ttl")["status"]) and s["currentRun"]["phase"] == "Succeeded" and s, 30)
    assert st["runs"][0]["phase"] == "Succeeded" and st["runs"][0]["finetuned"] == 0.59
    assert st["results"]["gain"] == 0.059
    assert k.condition("ttl", "Ready")["status"] == "True"
    # Once recorded, the finalizer leaves and the TTL controller's deletion completes.
    wait(lambda: not k.jobs("ttl") and not k.pods("ttl"), GC_DEADLINE, "the Job and pod to go", interval=1.0)


@pytest.mark.slow
def test_deleting_the_resource_removes_its_children_despite_the_finalizer(
    k: Kube, start_operator: Callable[..., RealOperator]
) -> None:
    start_operator()
    k.create(resource("gone"))
    wait(lambda: k.pods("gone"), 30, "the trainer pod")
    k.delete_eft("gone")
    wait_children_gone(k, "gone")


@pytest.mark.slow
def test_an_image_outside_the_allowlist_stalls_and_creates_nothing(
    k: Kube, start_operator: Callable[..., RealOperator]
) -> None:
    start_operator()
    k.create(resource("evil", image="docker.io/attacker/anything:latest"))
    cond = wait(lambda: (c := k.condition("evil", "Stalled")) and c["status"] == "True" and c, 15, "Stalled")
    assert cond["reason"] == "ImageNotAllowed" and "docker.io/attacker/anything:latest" in cond["message"]
    wait(lambda: "ImageNotAllowed" in k.event_reasons("evil"), 10, "an ImageNotAllowed Event")
    assert k.jobs("evil") == [] and k.configmaps("evil") == []
    # An image of the allowed repository runs.
    k.patch_eft("evil", {"spec": {"image": "registry.test/eft-trainer:2.0.0"}})
    job = wait(lambda: k.jobs("evil"), 15, "the Job")[0]
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.test/eft-trainer:2.0.0"


@pytest.mark.slow
def test_an_unschedulable_pod_shows_the_schedulers_message_without_failing_the_run(
    k: Kube, start_operator: Callable[..., RealOperator]
) -> None:
    start_operator()
    k.create(resource("big", resources={"gpus": 1}))
    pod = wait(lambda: k.pods("big"), 30, "the trainer pod")[0]
    said = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    k.set_pod_status(
        pod["metadata"]["name"],
        {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": said}]},
    )
    cond = wait(lambda: (c := k.condition("big", "Reconciling")) and c["reason"] == "Unschedulable" and c, 15)
    assert said in cond["message"] and "spec.resources" in cond["message"] and "spec.scheduling" in cond["message"]
    assert k.eft("big")["status"]["currentRun"]["phase"] == "Pending"
    assert k.condition("big", "Stalled")["status"] == "False"  # an autoscaler may still add a node
    wait(lambda: "Unschedulable" in k.event_reasons("big"), 10, "an Unschedulable Event")


@pytest.mark.slow
def test_a_superseded_runs_configmap_is_deleted(k: Kube, start_operator: Callable[..., RealOperator]) -> None:
    start_operator()
    k.create(resource("edit"))
    first = wait(lambda: k.configmaps("edit"), 15, "the first ConfigMap")[0]["metadata"]["name"]
    k.patch_eft("edit", {"spec": {"training": {"epochs": 2}}})
    wait(
        lambda: (
            [c["metadata"]["name"] for c in k.configmaps("edit")] not in ([], [first])
            and len(k.configmaps("edit")) == 1
        ),
        30,
        "only the new run's ConfigMap",
    )
    wait(lambda: len(k.jobs("edit")) == 1 and k.jobs("edit")[0]["metadata"]["name"] != first, 30, "only the new Job")
    st = k.eft("edit")["status"]
    assert [r["phase"] for r in st["runs"]] == ["Superseded"]


@pytest.mark.slow
def test_a_handler_failure_ends_in_a_condition_and_an_event(
    k: Kube, start_operator: Callable[..., RealOperator], monkeypatch: pytest.MonkeyPatch
) -> None:
    import eft_operator.reconciler as reconciler_module

    real = reconciler_module.render_children

    def broken(owner: Any, spec: Any, settings: Any, reuse: Any = None) -> Any:
        if owner.name == "buggy":
            raise RuntimeError("a bug in rendering")
        return real(owner, spec, settings, reuse)

    monkeypatch.setattr(reconciler_module, "render_children", broken)
    start_operator()
    k.create(resource("buggy"))
    cond = wait(lambda: (c := k.condition("buggy", "Stalled")) and c["status"] == "True" and c, 15, "Stalled")
    assert cond["reason"] == "ReconcileFailed" and "a bug in rendering" in cond["message"]
    wait(lambda: "ReconcileFailed" in k.event_reasons("buggy"), 10, "a ReconcileFailed Event")
    # kopf's own log line about the failed handler is posted too (settings.posting.loggers).
    wait(
        lambda: any("Handler 'reconcile' failed" in str(e.get("message")) for e in k.events("buggy")),
        15,
        "kopf's failure as an Event",
    )


@pytest.mark.slow
def test_runs_reach_their_outcome_in_status_with_finalizers_released(
    k: Kube, start_operator: Callable[..., RealOperator]
) -> None:
    start_operator()
    k.create(resource("ok"))
    rid = _run_id(k, "ok")
    pod = wait(lambda: k.pods("ok"), 30, "the trainer pod")[0]
    k.set_pod_status(pod["metadata"]["name"], pod_succeeded(rid))
    wait(lambda: k.condition("ok", "Ready").get("status") == "True", 30, "Ready")
    wait(
        lambda: all(
            OUTCOME_FINALIZER not in (o["metadata"].get("finalizers") or []) for o in k.jobs("ok") + k.pods("ok")
        ),
        15,
        "the finalizers released",
    )
    assert k.eft("ok")["status"]["runs"][0]["id"] == rid
    assert contract.LABEL_RUN in k.jobs("ok")[0]["metadata"]["labels"]


@pytest.mark.slow
def test_changing_only_a_guards_max_drop_re_gates_the_trained_model_of_the_rejected_run(
    k: Kube, start_operator: Callable[..., RealOperator]
) -> None:
    """A run rejected by its guard keeps its trained weights; the next generation (only maxDrop changed) gets
    reuseModelFrom in its run config, and its status entry says reusedModelFrom."""
    import json

    start_operator()
    guard = {"name": "faq", "uri": "s3://bucket/faq.jsonl", "maxDrop": 0.0}
    k.create(resource("regate", evaluation={"guards": [guard]}))
    rid = _run_id(k, "regate")
    pod = wait(lambda: k.pods("regate"), 30, "the trainer pod")[0]
    kept = f"s3://bucket/runs/{k.ns}/regate/{rid}/checkpoints/trained-model/"
    rejected = contract.TerminationMessage(
        outcome="Failed",
        reason="PromotionRejected",
        message="guard faq dropped ndcg@10 by 0.0150 at 384 dims, more than its maxDrop 0",
        run_id=rid,
        artifacts=contract.Artifacts(report="s3://r", manifest="s3://m", trained_model=kept),
    ).to_json()
    status = pod_succeeded(rid)
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    terminated.update(exitCode=int(contract.ExitCode.PROMOTION_REJECTED), reason="Error", message=rejected)
    status["phase"] = "Failed"
    k.set_pod_status(pod["metadata"]["name"], status)
    st = wait(lambda: (s := k.eft("regate")["status"]) and s.get("runs") and s, 60, "the rejected run recorded")
    assert st["runs"][0]["reason"] == "PromotionRejected" and st["runs"][0]["trainingDigest"]

    k.patch_eft("regate", {"spec": {"evaluation": {"guards": [{**guard, "maxDrop": 0.02}]}}})
    rid2 = wait(lambda: (r := _run_id(k, "regate")) != rid and r, 30, "the second run")
    cm = wait(lambda: [c for c in k.configmaps("regate") if rid2 in c["metadata"]["name"]], 30, "its ConfigMap")[0]
    cfg = json.loads(cm["data"][contract.RUN_CONFIG_KEY])
    assert cfg["reuseModelFrom"] == {"runId": rid, "uri": kept}
    assert k.eft("regate")["status"]["currentRun"]["reusedModelFrom"] == rid
