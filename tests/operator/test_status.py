"""Table tests of the pure status computation."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from eft_api import contract
from eft_operator.status import COMPLETION_INDEX, Observation, Problem, compute_status, merge_patch, observe

JOB: dict[str, Any] = {
    "metadata": {"name": "j", "labels": {}},
    "spec": {
        "activeDeadlineSeconds": 60,
        "backoffLimit": 2,
        "template": {"spec": {"containers": [{"resources": {"limits": {"memory": "6Gi"}}}]}},
    },
    "status": {},
}


def job(**status: Any) -> dict[str, Any]:
    return {**JOB, "status": status}


def failed(reason: str) -> dict[str, Any]:
    return job(conditions=[{"type": "Failed", "status": "True", "reason": reason}])


def pod(state: dict[str, Any], last: dict[str, Any] | None = None, ts: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    cs: dict[str, Any] = {"name": "trainer", "state": state}
    if last:
        cs["lastState"] = last
    return {"metadata": {"name": f"p-{ts}", "creationTimestamp": ts}, "status": {"containerStatuses": [cs]}}


def node(index: int, state: dict[str, Any], ts: str) -> dict[str, Any]:
    """A pod of an Indexed (multi-node) Job: the Job controller annotates its completion index."""
    p = pod(state, ts=ts)
    p["metadata"] = {**p["metadata"], "name": f"p-{index}-{ts}", "annotations": {COMPLETION_INDEX: str(index)}}
    return p


def tm(reason: str, outcome: str = "Failed") -> str:
    return contract.TerminationMessage(outcome=outcome, reason=reason, message=f"{reason} happened").to_json()


CASES = [
    ("no pods yet", job(), [], "Pending", "JobCreated"),
    ("running", job(), [pod({"running": {}})], "Running", "Running"),
    ("ready without pods", job(ready=1), [], "Running", "Running"),
    ("suspended", {**job(), "spec": {**JOB["spec"], "suspend": True}}, [], "Suspended", "Suspended"),
    (
        "queued",
        {**job(), "metadata": {"labels": {contract.KUEUE_QUEUE_LABEL: "q"}}, "spec": {"suspend": True}},
        [],
        "Queued",
        "Queued",
    ),
    (
        "secret",
        job(),
        [pod({"waiting": {"reason": "CreateContainerConfigError", "message": 'secret "s" not found'}})],
        "Pending",
        "SecretNotFound",
    ),
    ("image", job(), [pod({"waiting": {"reason": "ImagePullBackOff", "message": "x"}})], "Pending", "ImagePullFailed"),
    (
        "succeeded",
        job(conditions=[{"type": "Complete", "status": "True"}]),
        [pod({"terminated": {"exitCode": 0, "message": tm("Succeeded", "Succeeded")}})],
        "Succeeded",
        "Succeeded",
    ),
    (
        "invalid corpus",
        failed("PodFailurePolicy"),
        [pod({"terminated": {"exitCode": 2, "message": tm("InvalidCorpus")}})],
        "Failed",
        "InvalidCorpus",
    ),
    (
        "s3",
        failed("BackoffLimitExceeded"),
        [pod({"terminated": {"exitCode": 75, "message": tm("S3Unavailable")}})],
        "Failed",
        "S3Unavailable",
    ),
    (
        "promotion",
        failed("PodFailurePolicy"),
        [pod({"terminated": {"exitCode": 3, "message": tm("PromotionRejected")}})],
        "Failed",
        "PromotionRejected",
    ),
    (
        "oom state",
        failed("BackoffLimitExceeded"),
        [pod({"terminated": {"exitCode": 137, "reason": "OOMKilled"}})],
        "Failed",
        "OOMKilled",
    ),
    (
        "oom lastState",
        failed("BackoffLimitExceeded"),
        [pod({"waiting": {}}, {"terminated": {"exitCode": 137, "reason": "OOMKilled"}})],
        "Failed",
        "OOMKilled",
    ),
    (
        "137 is not oom",
        failed("BackoffLimitExceeded"),
        [pod({"terminated": {"exitCode": 137, "reason": "Error"}})],
        "Failed",
        "BackoffLimitExceeded",
    ),
    (
        "newest pod decides",
        failed("BackoffLimitExceeded"),
        [
            pod({"terminated": {"exitCode": 75, "message": tm("S3Unavailable")}}, ts="1"),
            pod({"terminated": {"reason": "OOMKilled", "exitCode": 137}}, ts="2"),
        ],
        "Failed",
        "OOMKilled",
    ),
    (
        "deadline",
        failed("DeadlineExceeded"),
        [pod({"terminated": {"exitCode": 1, "message": tm("TrainerCrashed")}})],
        "Failed",
        "DeadlineExceeded",
    ),
    ("exit code only", failed("PodFailurePolicy"), [pod({"terminated": {"exitCode": 4}})], "Failed", "OOMKilled"),
    ("job gone", None, [], "Failed", "JobDeleted"),
    (
        "multi-node: rank 0's verdict, not its peer's lost connection",
        failed("PodFailurePolicy"),
        [
            node(0, {"terminated": {"exitCode": 2, "message": tm("InvalidCorpus")}}, ts="1"),
            node(1, {"terminated": {"exitCode": 1}}, ts="2"),
        ],
        "Failed",
        "InvalidCorpus",
    ),
    (
        "multi-node: a node killed for memory is the cause",
        failed("BackoffLimitExceeded"),
        [
            node(0, {"terminated": {"exitCode": 1, "message": tm("TrainerCrashed")}}, ts="2"),
            node(1, {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}, ts="1"),
        ],
        "Failed",
        "OOMKilled",
    ),
    (
        "multi-node: an earlier attempt's verdict does not speak for the last one",
        failed("BackoffLimitExceeded"),
        [
            node(0, {"terminated": {"exitCode": 75, "message": tm("S3Unavailable")}}, ts="1"),
            node(1, {"terminated": {"exitCode": 1}}, ts="1"),
            node(0, {"terminated": {"exitCode": 1}}, ts="3"),
            node(1, {"terminated": {"exitCode": 1}}, ts="3"),
        ],
        "Failed",
        "BackoffLimitExceeded",
    ),
]


@pytest.mark.parametrize(("case", "j", "pods", "phase", "reason"), CASES, ids=[c[0] for c in CASES])
def test_observe(case: str, j: Any, pods: list[dict[str, Any]], phase: str, reason: str) -> None:
    obs = observe(j, pods)
    assert (obs.phase, obs.reason) == (phase, reason)


RUN = {
    "id": "g1-abc",
    "generation": 1,
    "jobName": "d-g1-abc",
    "specHash": "h",
    "outputUri": "s3://b/x/",
    "startTime": "T0",
}


def test_transitions_conditions_history_and_events() -> None:
    s1, e1 = compute_status(None, generation=1, run=RUN, observation=Observation("Pending", "JobCreated"), now="T1")
    assert [e.reason for e in e1] == ["RunCreated"]
    cond = {c["type"]: c for c in s1["conditions"]}
    assert (cond["Reconciling"]["status"], cond["Ready"]["status"], cond["Stalled"]["status"]) == (
        "True",
        "False",
        "False",
    )
    s2, e2 = compute_status(
        s1, generation=1, run=s1["currentRun"], observation=Observation("Pending", "JobCreated"), now="T2"
    )
    assert s2 == s1 and e2 == []  # nothing happened: nothing changes, not even a timestamp
    s3, e3 = compute_status(
        s2, generation=1, run=s2["currentRun"], observation=Observation("Running", "Running", "r"), now="T3"
    )
    assert [e.reason for e in e3] == ["RunStarted"]
    assert {c["type"]: c for c in s3["conditions"]}["Reconciling"]["lastTransitionTime"] == "T1"  # still True
    term = contract.TerminationMessage.parse(
        '{"outcome":"Succeeded","reason":"Succeeded","headline":{"primaryMetric":"ndcg@10","dimension":384,'
        '"base":0.531,"finetuned":0.59,"gain":0.059},"artifacts":{"model":"s3://b/x/model/"}}'
    )
    s4, e4 = compute_status(
        s3, generation=1, run=s3["currentRun"], observation=Observation("Succeeded", "Succeeded", "ok", term), now="T4"
    )
    assert [e.reason for e in e4] == ["RunSucceeded"] and s4["results"]["finetuned"] == 0.59
    assert "generatedData" not in s4["runs"][0]  # pairs, not documents
    assert s4["runs"][0]["id"] == "g1-abc" and s4["runs"][0]["completionTime"] == "T4"
    ready = {c["type"]: c for c in s4["conditions"]}["Ready"]
    assert (ready["status"], ready["lastTransitionTime"]) == ("True", "T4")
    # A finished run is history: a later observation (Job gone after TTL) changes nothing.
    s5, e5 = compute_status(s4, generation=1, run=s4["currentRun"], observation=observe(None, []), now="T5")
    assert s5 == s4 and e5 == []


@pytest.mark.parametrize("index", [None, False, True])
def test_results_say_whether_to_reindex(index: bool | None) -> None:
    text = (
        '{"outcome":"Succeeded","reason":"Succeeded","headline":{"primaryMetric":"ndcg@10","dimension":384,'
        '"base":0.5,"finetuned":0.6,"gain":0.1}'
    )
    if index is not None:
        text += f',"index":{{"reindexRequired":{str(index).lower()},"dimension":384,"similarity":"cosine","normalized":true}}'
    term = contract.TerminationMessage.parse(text + "}")
    s, _ = compute_status(
        None, generation=1, run=RUN, observation=Observation("Succeeded", "Succeeded", "ok", term), now="T1"
    )
    assert s["results"].get("reindexRequired") == index


def test_a_rejected_runs_guards_reach_its_history_entry() -> None:
    """evaluation.guards: each guard's figures, from the termination message, in the run's status.runs[] entry."""
    term = contract.TerminationMessage.parse(
        '{"outcome":"Failed","reason":"PromotionRejected","message":"guard faq dropped ndcg@10 by 0.0250",'
        '"guards":[{"name":"faq","base":0.803,"finetuned":0.778,"delta":-0.025,"ciLow":-0.06,"ciHigh":0.01,'
        '"maxDrop":0.01,"passed":false},{"name":"docs","base":0.5,"finetuned":0.6,"delta":0.1,"ciLow":0.05,'
        '"ciHigh":0.15,"maxDrop":0.0,"passed":true}]}'
    )
    assert term is not None
    s, _ = compute_status(
        None, generation=1, run=RUN, observation=Observation("Failed", "PromotionRejected", "no", term), now="T1"
    )
    faq, docs = s["runs"][0]["guards"]
    assert (faq["name"], faq["passed"], faq["delta"], faq["ciLow"], faq["maxDrop"]) == (
        "faq",
        False,
        -0.025,
        -0.06,
        0.01,
    )
    assert (docs["name"], docs["passed"]) == ("docs", True)


def test_supersede_and_history_bound() -> None:
    prev: dict[str, Any] = {"currentRun": {**RUN, "phase": "Running"}, "runs": [{"id": f"old{i}"} for i in range(10)]}
    new = {**RUN, "id": "g2-abc", "generation": 2, "jobName": "d-g2-abc"}
    s, e = compute_status(
        prev,
        generation=2,
        run=new,
        observation=Observation("Pending", "JobCreated"),
        superseded=prev["currentRun"],
        superseded_by="generation 2 changed the spec",
        now="T",
    )
    assert [x.reason for x in e] == ["RunSuperseded", "RunCreated"]
    assert len(s["runs"]) == 10 and s["runs"][0]["phase"] == "Superseded" and s["currentRun"]["id"] == "g2-abc"


def test_problem_sets_stalled_once() -> None:
    s, e = compute_status(None, generation=2, run=None, problem=Problem("InvalidSpec", "spec.x: bad"), now="T")
    stalled = {c["type"]: c for c in s["conditions"]}["Stalled"]
    assert (stalled["status"], stalled["reason"], stalled["observedGeneration"]) == ("True", "InvalidSpec", 2)
    assert [x.reason for x in e] == ["InvalidSpec"]
    s2, e2 = compute_status(s, generation=2, run=None, problem=Problem("InvalidSpec", "spec.x: bad"), now="T9")
    assert s2 == s and e2 == []


def test_merge_patch() -> None:
    assert merge_patch({"a": 1, "b": {"c": 1, "d": 2}}, {"a": 1, "b": {"c": 2}}) == {"b": {"c": 2, "d": None}}
    assert merge_patch({"a": [1]}, {"a": [1]}) == {}


@pytest.mark.parametrize(
    ("plural", "event_type", "body", "news"),
    [
        ("jobs", "ADDED", {"spec": {}}, False),  # just created by the pass that recorded it
        ("jobs", "MODIFIED", {"spec": {"suspend": True}, "status": {}}, False),  # our own suspend patch
        ("jobs", "MODIFIED", {"status": {"active": 1, "ready": 0}}, False),  # the Job controller counting
        ("jobs", "MODIFIED", {"status": {"active": 1, "ready": 1}}, True),
        ("jobs", "MODIFIED", {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}, True),
        ("jobs", "MODIFIED", {"status": {"conditions": [{"type": "Suspended", "status": "False"}]}}, True),
        ("jobs", "MODIFIED", {"metadata": {"deletionTimestamp": "t"}}, True),  # the finalizer must go
        ("jobs", "DELETED", {"spec": {}}, True),  # the run lost its Job
        # A pod appearing says nothing yet (Reconciler.pod_appeared decides whether a waiting run cares).
        ("pods", "ADDED", {"spec": {}}, False),
        ("pods", "MODIFIED", {"status": {"phase": "Pending"}}, False),
        (
            "pods",
            "MODIFIED",
            {"status": {"containerStatuses": [{"state": {"waiting": {"reason": "ContainerCreating"}}}]}},
            False,
        ),
        (
            "pods",
            "MODIFIED",
            {"status": {"containerStatuses": [{"state": {"waiting": {"reason": "ErrImagePull"}}}]}},
            True,
        ),
        ("pods", "MODIFIED", {"status": {"containerStatuses": [{"state": {"running": {}}}]}}, True),
        ("pods", "MODIFIED", {"status": {"conditions": [{"type": "PodScheduled", "status": "False"}]}}, True),
        ("pods", "MODIFIED", {"status": {"phase": "Failed"}}, True),
        ("pods", "DELETED", {"spec": {}}, True),
    ],
)
def test_child_events_without_news_are_skipped(plural: str, event_type: str, body: dict[str, Any], news: bool) -> None:
    from eft_operator.handlers import child_event_has_news, child_event_wanted

    assert child_event_has_news(plural, event_type, body) is news
    # kopf calls the handler for the news, and for a pod that appears (pod_appeared decides what it means)
    appeared = plural == "pods" and event_type == "ADDED"
    resource = kopf.Resource("" if plural == "pods" else "batch", "v1", plural)
    assert child_event_wanted(resource=resource, type=event_type, body=body) is (news or appeared)


@pytest.mark.parametrize(
    ("event_type", "annotation", "consumed", "wanted"),
    [
        ("DELETED", None, None, True),  # its lock, metrics series and diffbase go
        ("MODIFIED", None, None, False),  # a status write, a label: the resource handlers' business
        (None, None, None, False),  # listed at start-up: the resume handler's
        ("MODIFIED", "2026-12-05T00:00:00Z", None, True),  # eft retrain: a pass starts the manual run
        ("MODIFIED", "2026-12-05T00:00:00Z", "2026-12-05T00:00:00Z", False),  # that run was started
    ],
)
def test_resource_events_reach_the_event_handler_only_when_it_acts(
    event_type: str | None, annotation: str | None, consumed: str | None, wanted: bool
) -> None:
    from eft_api.retrain import RETRAIN_ANNOTATION
    from eft_operator.handlers import resource_event_wanted

    body: dict[str, Any] = {"metadata": {"annotations": {RETRAIN_ANNOTATION: annotation} if annotation else {}}}
    if consumed:
        body["status"] = {"retrain": {"lastManual": consumed}}
    assert resource_event_wanted(type=event_type, body=body) is wanted


def test_generated_data_counts_reach_the_run_history() -> None:
    s1, _ = compute_status(None, generation=1, run=RUN, observation=Observation("Running", "Running"), now="T1")
    gen = {"dataset": "s3://b/o/ns/d/datasets/abc/", "reused": True, "documents": 13, "chunks": 400}
    term = contract.TerminationMessage.model_validate(
        {"outcome": "Succeeded", "reason": "Succeeded", "generation": {**gen, "pairs": 216, "dropped": 12}}
    )
    s2, _ = compute_status(
        s1, generation=1, run=s1["currentRun"], observation=Observation("Succeeded", "Succeeded", "ok", term), now="T2"
    )
    assert s2["runs"][0]["generatedData"] == {**gen, "pairs": 216, "dropped": 12, "requests": 0, "refused": 0}


def test_an_out_of_memory_fallback_shows_while_retrying_and_reaches_the_history() -> None:
    """The trainer switched its loss after running out of memory: the retry's Running message says so, and the
    finished run's status.runs[] entry carries oomFallback (from the termination message)."""
    fb = contract.OomFallback(
        from_loss="MultipleNegativesRanking", to_loss="CachedMultipleNegativesRanking", mini_batch_size=8, attempt=2
    )
    first = contract.TerminationMessage(outcome="Failed", reason="OOMKilled", message="oom", oom_fallback=fb)
    gone = pod({"terminated": {"exitCode": 5, "message": first.to_json()}}, ts="2026-01-01T00:00:00Z")
    retry = pod({"running": {}}, ts="2026-01-01T00:01:00Z")
    seen = observe(job(), [gone, retry])
    assert seen.phase == "Running" and "attempt 2 after running out of memory" in seen.message
    assert "CachedMultipleNegativesRanking with mini-batch 8" in seen.message
    out = observe(failed("BackoffLimitExceeded"), [gone])  # the Job had no retry left for the planned attempt
    assert out.reason == "OOMKilled" and "no attempt is left (spec.runPolicy.backoffLimit 2)" in out.message
    done = contract.TerminationMessage(outcome="Succeeded", reason="Succeeded", oom_fallback=fb)
    s, _ = compute_status(
        None, generation=1, run=RUN, observation=Observation("Succeeded", "Succeeded", "ok", done), now="T1"
    )
    assert s["runs"][0]["oomFallback"] == {
        "fromLoss": "MultipleNegativesRanking",
        "toLoss": "CachedMultipleNegativesRanking",
        "miniBatchSize": 8,
        "attempt": 2,
    }


def test_a_re_gate_reuses_the_newest_kept_model_of_the_same_training_digest() -> None:
    from eft_operator.status import reusable

    def run(i: str, digest: str, reason: str, kept: str | None) -> dict[str, Any]:
        return {
            "id": i,
            "trainingDigest": digest,
            "reason": reason,
            "artifacts": {"trainedModel": kept} if kept else {},
        }

    runs = [
        run("r5", "other", "Succeeded", "s3://b/r5/model/"),
        run("r4", "d1", "InvalidCorpus", None),
        run("r3", "d1", "PromotionRejected", "s3://b/r3/checkpoints/trained-model/"),
        run("r2", "d1", "Succeeded", "s3://b/r2/model/"),
    ]
    reuse = reusable(runs, "d1")
    assert reuse is not None and (reuse.run_id, reuse.uri) == ("r3", "s3://b/r3/checkpoints/trained-model/")
    assert reusable(runs, "d2") is None
    assert reusable([run("r1", "d1", "Superseded", "s3://b/r1/model/")], "d1") is None
    assert reusable([{"id": "old", "reason": "Succeeded", "artifacts": {"model": "s3://b/old/model/"}}], "d1") is None
