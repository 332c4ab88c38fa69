"""Progress in status on a REAL control plane: the operator reads a real trainer ``Progress`` server.

The test plays the kubelet: the run's Pod gets IP 127.0.0.1 and a running trainer container, and the
operator's setting ``trainer_metrics_port`` (the container port named ``metrics``) is the port where a real
``eft_trainer.metrics.Progress`` serves its gauges. ``kubectl get eft`` is the Table API.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from real_cluster import TEST_IMAGE, Kube, RealOperator, pod_succeeded, resource, wait

from eft_api import contract
from eft_api.spec import API_GROUP, API_VERSION, PLURAL
from eft_api.status import TrainerStatus
from eft_operator.config import Settings
from eft_trainer.metrics import Progress

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"


@pytest.fixture
def k(kube: Any, eft_crd: Any, kube_namespace: str) -> Kube:
    return Kube(kube, kube_namespace)


@pytest.fixture
def trainer() -> Iterator[Progress]:
    """A real trainer gauge server on a free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    prog = Progress(port, addr="127.0.0.1")
    yield prog
    prog.close()


@pytest.fixture
def operator_for(control_plane: Any, k: Kube) -> Iterator[Callable[[int], RealOperator]]:
    running: list[RealOperator] = []

    def start(port: int) -> RealOperator:
        settings = Settings(
            trainer_image=TEST_IMAGE, watch_namespaces=(k.ns,), trainer_metrics_port=port, progress_interval=0.3
        )
        op = RealOperator(control_plane.kubeconfig, settings, recheck_delays=(0.5, 1.0), no_pod_grace=60.0)
        running.append(op.start())
        return op

    yield start
    for op in running:
        op.stop()


def running_status() -> dict[str, Any]:
    """A pod status as the kubelet writes it once the trainer container runs, on 127.0.0.1."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {
        "phase": "Running",
        "podIP": "127.0.0.1",
        "podIPs": [{"ip": "127.0.0.1"}],
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [
            {
                "name": "trainer",
                "image": TEST_IMAGE,
                "imageID": "",
                "ready": True,
                "restartCount": 0,
                "started": True,
                "state": {"running": {"startedAt": now}},
            }
        ],
    }


def trainer_status(k: Kube, name: str) -> TrainerStatus | None:
    return TrainerStatus.of(k.eft(name).get("status"))


def progress_column(k: Kube, name: str) -> Any:
    """The Progress cell of ``kubectl get eft`` (the Table API)."""
    path = f"/apis/{API_GROUP}/{API_VERSION}/namespaces/{k.ns}/{PLURAL}"
    resp = k.api.call_api("GET", k.api.configuration.host + path, header_params={"Accept": TABLE})
    table = json.loads(resp.read())
    column = [c["name"] for c in table["columnDefinitions"]].index("Progress")
    row = next(r for r in table["rows"] if r["object"]["metadata"]["name"] == name)
    return row["cells"][column]


def start_run(
    k: Kube, trainer: Progress, operator_for: Callable[[int], RealOperator], name: str
) -> tuple[RealOperator, dict[str, Any]]:
    """The operator, a resource, its pod running on 127.0.0.1 and the trainer's first phase in status."""
    port = int(trainer.server[0].server_port)
    op = operator_for(port)
    k.create(resource(name))
    pod = wait(lambda: k.pods(name), 30, "the trainer pod")[0]
    ports = pod["spec"]["containers"][0]["ports"]
    assert {"name": "metrics", "containerPort": port, "protocol": "TCP"} in ports
    trainer.set_phase("evaluate-base")
    k.set_pod_status(pod["metadata"]["name"], running_status())
    ts = wait(lambda: (t := trainer_status(k, name)) and t.phase == "EvaluatingBase" and t, 20, "EvaluatingBase")
    assert ts.progress_percentage == 12 and ts.last_updated_time
    assert op.reconciler.progress.following((k.ns, name)) == f"http://127.0.0.1:{port}/metrics"
    return op, pod


@pytest.mark.slow
def test_progress_follows_the_trainer_into_status_and_kubectl_get(
    k: Kube, trainer: Progress, operator_for: Callable[[int], RealOperator]
) -> None:
    op, pod = start_run(k, trainer, operator_for, "prog")

    trainer.set_phase("train")
    trainer.max_steps.set(200)
    trainer.step.set(100)
    trainer.epoch.set(0.5)
    trainer.loss.set(0.8125)
    trainer.sps.set(42.5)
    trainer.eta.set(61.2)
    ts = wait(lambda: (t := trainer_status(k, "prog")) and t.progress_percentage == 57 and t, 20, "57 %")
    assert ts.phase == "Training" and ts.estimated_remaining_seconds == 62
    assert (ts.metric("loss"), ts.metric("samplesPerSecond"), ts.metric("step")) == ("0.8125", "42.5", "100")
    assert (ts.metric("maxSteps"), ts.metric("epoch")) == ("200", "0.5")
    assert wait(lambda: progress_column(k, "prog") == 57, 10, "the Progress column")
    served = op.reconciler.metrics.render().decode()  # the operator's /metrics, as the dashboard reads it
    assert f'eft_run_progress_percent{{name="prog",namespace="{k.ns}"}} 57.0' in served

    # The trainer stops answering: status keeps its last value, the failures are counted, nothing else breaks.
    registry = op.reconciler.metrics.registry

    def failures() -> float:
        return registry.get_sample_value("eft_progress_read_failures_total", {"kind": "unreachable"}) or 0.0

    before = failures()
    trainer.close()
    wait(lambda: failures() >= before + 3, 20, "failed reads counted")
    assert 'eft_progress_read_failures_total{kind="unreachable"}' in op.reconciler.metrics.render().decode()
    st = k.eft("prog")["status"]
    assert st["trainerStatus"]["progressPercentage"] == 57 and st["currentRun"]["phase"] == "Running"
    assert k.condition("prog", "Reconciling")["status"] == "True"
    assert k.condition("prog", "Stalled")["status"] == "False"

    # The run succeeds: 100, Done, and the reader lets go.
    rid = st["currentRun"]["id"]
    k.set_pod_status(pod["metadata"]["name"], pod_succeeded(rid))
    ts = wait(lambda: (t := trainer_status(k, "prog")) and t.phase == "Done" and t, 30, "Done")
    assert ts.progress_percentage == 100 and ts.estimated_remaining_seconds == 0 and ts.metric("step") == "100"
    assert progress_column(k, "prog") == 100
    wait(lambda: op.reconciler.progress.following((k.ns, "prog")) is None, 10, "the reader to stop")


@pytest.mark.slow
def test_a_failed_run_keeps_the_last_progress(
    k: Kube, trainer: Progress, operator_for: Callable[[int], RealOperator]
) -> None:
    op, pod = start_run(k, trainer, operator_for, "fails")
    rid = k.eft("fails")["status"]["currentRun"]["id"]
    trainer.set_phase("failed")  # as the trainer does before it exits
    failed = contract.TerminationMessage(
        outcome="Failed", reason="InvalidCorpus", message="pairs.jsonl line 3: bad JSON"
    )
    k.set_pod_status(pod["metadata"]["name"], pod_failed(failed.to_json(), exit_code=2))
    st = wait(lambda: (s := k.eft("fails")["status"]) and s["currentRun"]["phase"] == "Failed" and s, 30, "Failed")
    assert st["currentRun"]["reason"] == "InvalidCorpus" and st["runs"][0]["id"] == rid
    ts = TrainerStatus.of(st)
    assert ts is not None and ts.progress_percentage == 12  # the last value read, not 100
    assert ts.phase in ("EvaluatingBase", "Failed")  # the reader may have seen the trainer's last phase
    wait(lambda: op.reconciler.progress.following((k.ns, "fails")) is None, 10, "the reader to stop")


def pod_failed(message: str, exit_code: int) -> dict[str, Any]:
    """A pod status as the kubelet writes it when the trainer exited with ``exit_code`` and ``message``."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    terminated = {"exitCode": exit_code, "reason": "Error", "message": message, "startedAt": now, "finishedAt": now}
    status = running_status()
    status["phase"] = "Failed"
    status["conditions"] = [{"type": "Ready", "status": "False", "reason": "PodFailed"}]
    status["containerStatuses"][0].update(ready=False, started=False, state={"terminated": terminated})
    return status
