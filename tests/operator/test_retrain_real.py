"""spec.retrain on the REAL control plane (envtest): schedules (Forbid, Replace, catch-up after downtime), the
manual trigger (the annotation, as ``eft retrain`` sets it), and spec.notify's CloudEvents to a loopback receiver.

Time is the operator's injectable clock (the wall clock plus an offset the test moves), so a schedule of every
minute is followed for several minutes in seconds: the timers wake on the moved clock, the passes that follow
are the real ones against the real API server and Job controller.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from ce_receiver import Receiver
from real_cluster import TEST_IMAGE, Kube, RealOperator, pod_succeeded, resource, wait

from eft_api.retrain import RETRAIN_ANNOTATION
from eft_cli.retrain import request_run
from eft_operator.config import Settings

pytestmark = pytest.mark.slow

FAST = {"recheck_delays": (0.5, 1.0, 2.0), "no_pod_grace": 60.0}


class Clock:
    """The wall clock, moved forward by the test."""

    def __init__(self) -> None:
        self.offset = dt.timedelta()

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset

    def __call__(self) -> str:
        return self.now().strftime("%Y-%m-%dT%H:%M:%SZ")

    def to_minute(self, minutes_ahead: int, second: int = 2) -> str:
        """Move to ``second`` past the minute ``minutes_ahead`` minutes after the current one; its schedule time."""
        base = self.now().replace(second=0, microsecond=0) + dt.timedelta(minutes=minutes_ahead)
        self.offset += base + dt.timedelta(seconds=second) - self.now()
        return base.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def k(kube: Any, eft_crd: Any, kube_namespace: str) -> Kube:
    return Kube(kube, kube_namespace)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def start_operator(control_plane: Any, k: Kube, clock: Clock) -> Iterator[Callable[[], RealOperator]]:
    running: list[RealOperator] = []

    def start() -> RealOperator:
        settings = Settings(trainer_image=TEST_IMAGE, watch_namespaces=(k.ns,))
        op = RealOperator(control_plane.kubeconfig, settings, clock=clock, **FAST)
        op.reconciler.timers.max_sleep = 0.2
        running.append(op.start())
        return op

    yield start
    for op in running:
        op.stop()


def _status(k: Kube, name: str) -> dict[str, Any]:
    return dict(k.eft(name).get("status") or {})


def _current(k: Kube, name: str) -> dict[str, Any]:
    return dict(_status(k, name).get("currentRun") or {})


def _finish(k: Kube, name: str) -> None:
    """Play the kubelet: the current run's pod succeeds; wait until status records it."""
    rid = _current(k, name)["id"]
    pod = wait(lambda: [p for p in k.pods(name) if p["metadata"]["labels"].get("finetune.eft.dev/run-id") == rid], 30)
    k.set_pod_status(pod[0]["metadata"]["name"], pod_succeeded(rid))
    wait(lambda: _current(k, name).get("phase") == "Succeeded", 30, f"run {rid} succeeded")


def test_a_schedule_runs_once_per_time_forbids_overlap_and_catches_up_once(
    k: Kube, clock: Clock, start_operator: Callable[[], RealOperator]
) -> None:
    start_operator()
    k.create(resource("nightly", retrain={"schedule": "* * * * *"}))
    wait(lambda: _current(k, "nightly").get("trigger") == "specChange", 20, "the first run")
    _finish(k, "nightly")
    assert len(k.jobs("nightly")) == 1

    first = clock.to_minute(1)
    wait(lambda: _current(k, "nightly").get("trigger") == "schedule", 20, "a scheduled run")
    assert _current(k, "nightly")["triggerKey"] == first
    assert len(k.jobs("nightly")) == 2
    assert _status(k, "nightly")["retrain"]["lastTrigger"] == "schedule"

    # The scheduled run is still going at the next time: Forbid skips (and counts) it.
    clock.to_minute(1)
    wait(lambda: _status(k, "nightly")["retrain"].get("skipped") == 1, 20, "a skipped time")
    assert len(k.jobs("nightly")) == 2
    wait(lambda: "RetrainSkipped" in k.event_reasons("nightly"), 10, "a RetrainSkipped Event")
    _finish(k, "nightly")
    third = clock.to_minute(1)
    wait(lambda: _current(k, "nightly").get("triggerKey") == third, 20, "the third time's run")
    assert len(k.jobs("nightly")) == 3
    _finish(k, "nightly")


def test_operator_down_across_two_times_makes_one_catch_up_run(
    k: Kube, clock: Clock, start_operator: Callable[[], RealOperator]
) -> None:
    op = start_operator()
    k.create(resource("catchup", retrain={"schedule": "* * * * *"}))
    wait(lambda: _current(k, "catchup").get("id"), 20, "the first run")
    _finish(k, "catchup")
    op.stop()
    clock.to_minute(1)
    newest = clock.to_minute(1)  # two schedule times passed while the operator was down
    start_operator()
    wait(lambda: _current(k, "catchup").get("triggerKey") == newest, 30, "one catch-up run")
    _finish(k, "catchup")
    runs = _status(k, "catchup")["runs"]
    assert [r.get("trigger") for r in runs] == ["schedule", "specChange"]
    assert len(k.jobs("catchup")) == 2


def test_replace_supersedes_the_going_run(k: Kube, clock: Clock, start_operator: Callable[[], RealOperator]) -> None:
    start_operator()
    k.create(resource("replace", retrain={"schedule": "* * * * *", "concurrencyPolicy": "Replace"}))
    first = wait(lambda: _current(k, "replace").get("id"), 20, "the first run")
    when = clock.to_minute(1)
    wait(lambda: _current(k, "replace").get("triggerKey") == when, 20, "the replacing run")
    history = _status(k, "replace")["runs"]
    assert history[0]["id"] == first and history[0]["phase"] == "Superseded"
    assert "concurrencyPolicy Replace" in history[0]["message"]
    wait(lambda: len(k.jobs("replace")) == 1, 30, "the superseded Job gone")


def test_the_annotation_starts_one_manual_run_per_value(
    k: Kube, kube: Any, start_operator: Callable[[], RealOperator]
) -> None:
    start_operator()
    k.create(resource("manual"))
    first = wait(lambda: _current(k, "manual").get("id"), 20, "the first run")
    _finish(k, "manual")
    value = request_run(kube, k.ns, "manual")
    wait(lambda: _current(k, "manual").get("trigger") == "manual", 20, "a manual run")
    current = _current(k, "manual")
    assert current["id"] != first and current["triggerKey"] == value
    assert current["generation"] == 1  # no spec edit
    assert k.eft("manual")["metadata"]["annotations"][RETRAIN_ANNOTATION] == value
    _finish(k, "manual")
    # The same value again starts nothing; a pass (a label edit) must not repeat the run.
    k.patch_eft("manual", {"metadata": {"labels": {"touched": "yes"}}})
    assert len(k.jobs("manual")) == 2
    request_run(kube, k.ns, "manual")
    wait(lambda: len(k.jobs("manual")) == 3, 20, "a second manual run")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_cloudevents_are_retried_and_survive_an_operator_restart(
    k: Kube, receiver: Receiver, start_operator: Callable[[], RealOperator]
) -> None:
    receiver.status = 500  # the receiver is down: the operator retries
    op = start_operator()
    op.reconciler.notifier.retry_delays = (0.2,)
    k.create(resource("told", notify=[{"url": receiver.url}]))
    rid = wait(lambda: _current(k, "told").get("id"), 20, "the run")
    _finish(k, "told")
    pending = wait(lambda: _status(k, "told").get("pendingNotifications"), 10, "a pending notification")
    assert pending[0]["id"] == f"{rid}.RunSucceeded" and pending[0]["urls"] == [receiver.url]
    wait(lambda: len(receiver.requests) >= 2, 10, "retries")
    wait(lambda: "NotificationFailed" in k.event_reasons("told"), 10, "a NotificationFailed Event")
    failed = op.reconciler.metrics.registry.get_sample_value(
        "eft_notifications_failed_total", {"event": "RunSucceeded"}
    )
    assert failed is not None and failed >= 2
    op.stop()  # not sent yet: the record stays in status

    receiver.status = 200
    start_operator()
    wait(lambda: receiver.accepted(), 20, "the event after the restart")
    wait(lambda: not _status(k, "told").get("pendingNotifications"), 10, "pending cleared")
    event = receiver.accepted()[0]
    assert event.get_id() == f"{rid}.RunSucceeded"
    assert event.get_type() == "dev.eft.finetune.RunSucceeded"
    assert event.get_source() == f"/apis/finetune.eft.dev/v1alpha1/namespaces/{k.ns}/embeddingfinetunes/told"
    assert event.get_subject() == rid
    headers = receiver.requests[-1][0]
    assert headers["ce-specversion"] == "1.0" and headers["content-type"] == "application/json"
    data = event.get_data()
    assert data["runId"] == rid and data["phase"] == "Succeeded" and data["trigger"] == "specChange"
    assert data["results"]["primaryMetric"] == "ndcg@10" and data["results"]["finetuned"] == 0.59
    assert data["artifacts"]["model"] == "s3://bucket/runs/x/model/"
    # Every attempt carried the same id: the receiver dedupes on it.
    assert {h["ce-id"] for h, _, _ in receiver.requests} == {f"{rid}.RunSucceeded"}
