"""spec.retrain on the REAL control plane (envtest): schedules (Forbid, Replace, catch-up after downtime), the
manual trigger (the annotation, as ``eft retrain`` sets it), spec.notify's CloudEvents to a loopback receiver, and
onDataChange with a real S3 (SeaweedFS): the probe Job played as a process with its pod's environment.

Time is the operator's injectable clock (the wall clock plus an offset the test moves), so a schedule of every
minute is followed for several minutes in seconds: the timers wake on the moved clock, the passes that follow
are the real ones against the real API server and Job controller.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.util
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web
from ce_receiver import Receiver
from kubernetes.client.exceptions import ApiException
from real_cluster import TEST_IMAGE, Kube, RealOperator, pod_succeeded, pod_terminated, resource, wait

from eft_api import contract, policy
from eft_api.retrain import RETRAIN_ANNOTATION
from eft_cli.retrain import request_run
from eft_operator.config import Settings

pytestmark = pytest.mark.slow


def allowing(*urls: str) -> policy.PlatformPolicy:
    """A platform policy that lets these tests reach their loopback receivers and S3 (and nothing else)."""
    origins = sorted({"{0.scheme}://{0.netloc}".format(urlsplit(u)) for u in urls})
    return policy.load({"notifyEndpoints": origins, "storageEndpoints": origins})


FAST = {"recheck_delays": (0.5, 1.0, 2.0), "no_pod_grace": 60.0}


MINUTE = dt.timedelta(minutes=1)


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

    def past(self, when: dt.datetime) -> None:
        """Move to a second past ``when`` (never back): the operator's timer for ``when`` fires now."""
        self.offset += max(dt.timedelta(), when + dt.timedelta(seconds=1) - self.now())


@pytest.fixture
def k(kube: Any, eft_crd: Any, kube_namespace: str) -> Kube:
    return Kube(kube, kube_namespace)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def start_operator(control_plane: Any, k: Kube, clock: Clock) -> Iterator[Callable[..., RealOperator]]:
    running: list[RealOperator] = []

    def start(*allowed: str) -> RealOperator:
        platform = allowing(*allowed)
        settings = Settings(trainer_image=TEST_IMAGE, watch_namespaces=(k.ns,), platform_policy=platform)
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
    k: Kube, clock: Clock, start_operator: Callable[..., RealOperator]
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
    k: Kube, clock: Clock, start_operator: Callable[..., RealOperator]
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


def test_replace_supersedes_the_going_run(k: Kube, clock: Clock, start_operator: Callable[..., RealOperator]) -> None:
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
    k: Kube, kube: Any, start_operator: Callable[..., RealOperator]
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
    wait(
        lambda: _current(k, "manual").get("triggerKey") not in (None, value),
        20,
        f"a second manual run {_status(k, 'manual')}",
    )
    assert len(k.jobs("manual")) == 3


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_cloudevents_are_retried_and_survive_an_operator_restart(
    k: Kube, receiver: Receiver, start_operator: Callable[..., RealOperator]
) -> None:
    receiver.status = 500  # the receiver is down: the operator retries
    op = start_operator(receiver.url)
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
    start_operator(receiver.url)
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


# ----------------------------------------------------------------------------------------- onDataChange


def _runs(k: Kube, name: str) -> list[dict[str, Any]]:
    return [j for j in k.jobs(name) if "-probe-" not in j["metadata"]["name"]]


def _probe_pod(k: Kube, name: str) -> dict[str, Any]:
    """The probe's pod, once the operator has started the probe's Job and the Job controller its pod (60 s:
    on a loaded CI machine the controller manager once took over 30 s). A timeout says what there was."""

    def found() -> list[dict[str, Any]]:
        pods = [p for p in k.pods(name) if "-probe-" in p["metadata"]["name"]]
        if not pods:
            jobs = [j["metadata"]["name"] for j in k.jobs(name) if "-probe-" in j["metadata"]["name"]]
            raise AssertionError(f"probe Jobs {jobs}, status.retrain {_retrain(k, name)}")
        return pods

    return dict(wait(found, 60, "the probe's pod")[0])


def _play_probe(k: Kube, pod: dict[str, Any], secret: dict[str, str], tmp: Path) -> int:
    """Play the kubelet for the probe pod: run its command as a process with the pod's environment (the Secret's
    values resolved, the run config mounted as a file) and write its termination message into the pod status."""
    container = pod["spec"]["containers"][0]
    configmap = k.core.read_namespaced_config_map(pod["spec"]["volumes"][0]["configMap"]["name"], k.ns)
    config = tmp / f"{pod['metadata']['name']}.json"
    config.write_text(configmap.data[contract.RUN_CONFIG_KEY])
    log = tmp / f"{pod['metadata']['name']}.log"
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    for e in container["env"]:
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        if ref is None or ref["key"] in secret:  # an optional key the Secret lacks is unset, as in a pod
            env[e["name"]] = secret[ref["key"]] if ref else e["value"]
    env.update({contract.RUN_CONFIG_ENV: str(config), contract.TERMINATION_LOG_ENV: str(log)})
    command = [sys.executable, *container["command"][1:]]  # python -m eft_trainer.probe
    code = subprocess.run(command, env=env, cwd=tmp, timeout=120, check=False).returncode
    k.set_pod_status(pod["metadata"]["name"], pod_terminated(code, log.read_text()))
    return code


def _retrain(k: Kube, name: str) -> dict[str, Any]:
    return dict(_status(k, name).get("retrain") or {})


def _next_check(k: Kube, name: str, interval: dt.timedelta) -> dt.datetime:
    """When the data check is due: the last check's time (the operator's clock) plus the interval. Moving the
    clock there, not to a fixed second of the next minute, makes the operator start the probe at once."""
    last = dt.datetime.strptime(_retrain(k, name)["lastCheckTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    return last + interval


def test_the_probe_starts_a_run_when_the_data_changes_and_none_when_it_does_not(
    k: Kube, clock: Clock, start_operator: Callable[..., RealOperator], s3_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    s3 = s3_server.client()
    s3.put_object(Bucket=s3_bucket, Key="train/pairs.jsonl", Body=b'{"anchor": "a", "positive": "b"}\n')
    secret = {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key}
    k.core.create_namespaced_secret(k.ns, {"metadata": {"name": "s3"}, "stringData": secret})
    start_operator(s3_server.endpoint)
    k.create(
        resource(
            "fresh",
            data={"train": {"uri": f"s3://{s3_bucket}/train/", "format": "pairs"}},
            storage={"endpoint": s3_server.endpoint, "pathStyle": True, "credentialsSecret": {"name": "s3"}},
            retrain={"onDataChange": {"enabled": True, "checkInterval": "1m"}},
        )
    )
    wait(lambda: _current(k, "fresh").get("id"), 20, "the first run")
    _finish(k, "fresh")
    assert _play_probe(k, _probe_pod(k, "fresh"), secret, tmp_path) == 0
    first = wait(lambda: _retrain(k, "fresh").get("lastDataDigest"), 20, "the first digest")
    assert _retrain(k, "fresh")["baselineDigest"] == first  # the first run's data, as far as anyone knows
    wait(lambda: not [j for j in k.jobs("fresh") if "-probe-" in j["metadata"]["name"]], 20, "the probe cleaned up")
    assert k.condition("fresh", "DataChecked")["status"] == "True"

    # Unchanged data: the next check starts no run.
    checked = _retrain(k, "fresh")["lastCheckTime"]
    clock.past(_next_check(k, "fresh", MINUTE))
    _play_probe(k, _probe_pod(k, "fresh"), secret, tmp_path)
    wait(lambda: _retrain(k, "fresh").get("lastCheckTime") != checked, 20, "the second check")
    assert _retrain(k, "fresh")["lastDataDigest"] == first
    assert len(_runs(k, "fresh")) == 1 and _current(k, "fresh")["trigger"] == "specChange"

    # A changed object: a dataChange run on the new digest.
    s3.put_object(Bucket=s3_bucket, Key="train/pairs.jsonl", Body=b'{"anchor": "a", "positive": "c"}\n')
    clock.past(_next_check(k, "fresh", MINUTE))
    _play_probe(k, _probe_pod(k, "fresh"), secret, tmp_path)
    wait(lambda: _current(k, "fresh").get("trigger") == "dataChange", 20, "a dataChange run")
    new = _retrain(k, "fresh")["lastDataDigest"]
    assert new != first and _current(k, "fresh")["dataDigest"] == new
    assert len(_runs(k, "fresh")) == 2
    cm = k.configmaps("fresh")
    assert any(json.loads(c["data"][contract.RUN_CONFIG_KEY])["run"].get("dataDigest") == new for c in cm)

    # A probe that cannot list the bucket (wrong keys) is shown, never silent.
    _finish(k, "fresh")
    clock.past(_next_check(k, "fresh", MINUTE))
    bad = {**secret, "AWS_SECRET_ACCESS_KEY": "wrong-secret-key-123"}
    assert _play_probe(k, _probe_pod(k, "fresh"), bad, tmp_path) != 0
    cond = wait(lambda: (c := k.condition("fresh", "DataChecked")) and c["status"] == "False" and c, 20, "ProbeFailed")
    assert cond["reason"] == "ProbeFailed" and "S3AccessDenied" in cond["message"]
    assert "wrong-secret-key-123" not in json.dumps(k.eft("fresh"))
    wait(lambda: "DataCheckFailed" in k.event_reasons("fresh"), 10, "a DataCheckFailed Event")
    assert len(_runs(k, "fresh")) == 2


# ----------------------------------------------------------------------------------------- the GitOps loop


class ExampleReceiver:
    """examples/reindex-receiver/receiver.py served on loopback in its own thread and event loop."""

    def __init__(self, create_job: Callable[[dict[str, Any]], bool], namespace: str) -> None:
        path = Path(__file__).resolve().parents[2] / "examples" / "reindex-receiver" / "receiver.py"
        spec = importlib.util.spec_from_file_location("reindex_receiver", path)
        assert spec is not None and spec.loader is not None
        self.module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.module)
        self.app = self.module.make_app(create_job, namespace, "registry.test/reindex:1.0")
        self.loop = asyncio.new_event_loop()
        self.port = 0
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            self.runner = web.AppRunner(self.app)
            self.loop.run_until_complete(self.runner.setup())
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            self.loop.run_until_complete(site.start())
            self.port = self.runner.addresses[0][1]
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        assert started.wait(10)
        self.url = f"http://127.0.0.1:{self.port}/events"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_a_published_model_triggers_the_example_reindex_job(
    k: Kube, clock: Clock, start_operator: Callable[..., RealOperator]
) -> None:
    def create_job(job: dict[str, Any]) -> bool:
        try:
            k.batch.create_namespaced_job(k.ns, job)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    receiver = ExampleReceiver(create_job, k.ns)
    try:
        start_operator(receiver.url)
        k.create(resource("loop", retrain={"schedule": "0 2 * * *"}, notify=[{"url": receiver.url}]))
        rid = wait(lambda: _current(k, "loop").get("id"), 20, "the run")
        pod = wait(lambda: k.pods("loop"), 30, "the trainer pod")[0]
        message = contract.TerminationMessage(
            outcome="Succeeded",
            reason="Succeeded",
            run_id=rid,
            headline=contract.Headline(primary_metric="ndcg@10", dimension=384, base=0.5, finetuned=0.6, gain=0.1),
            index=contract.IndexSummary(reindex_required=True, dimension=384, similarity="cosine", normalized=True),
            artifacts=contract.Artifacts(model=f"s3://bucket/runs/{k.ns}/loop/{rid}/model/"),
            registry=contract.RegistryInfo(model_name="support-search", version="7", alias="champion"),
        ).to_json()
        k.set_pod_status(pod["metadata"]["name"], pod_terminated(0, message))
        job = wait(
            lambda: [j for j in k.jobs() if j["metadata"]["name"].startswith("reindex-")], 30, "the re-index Job"
        )
        env = {e["name"]: e["value"] for e in job[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["MODEL_URI"].endswith(f"/{rid}/model/") and env["REGISTERED_VERSION"] == "7"
        assert env["RUN_ID"] == rid
        wait(lambda: not _status(k, "loop").get("pendingNotifications"), 10, "the event delivered")
        assert _status(k, "loop")["results"]["registeredVersion"] == "7"
        assert _status(k, "loop")["retrain"]["nextScheduleTime"].endswith("T02:00:00Z")
    finally:
        receiver.close()
