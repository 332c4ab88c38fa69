"""High availability, outages and clean uninstall on the REAL control plane (envtest), with ``eft-operator``
as real processes (tests/operator/operator_process.py):

* two replicas: exactly one leads (by the Lease), only it creates Jobs; SIGKILL it during a burst of 50
  resources: the standby takes over, one Job per generation, all reconciled within lease duration + 30 s;
* kube-apiserver stopped for 60 s in the middle of a burst: every resource gets its Job and a correct status
  within a minute of recovery, with no manual action (the test plays the kubelet, restarting a replica
  that exits because it could not renew its Lease);
* a namespace deleted with running Jobs while the operator is stopped stays Terminating until
  ``eft-operator release-finalizers`` runs, then goes; a namespace dropped from the watch list is
  released when the operator starts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from controlplane import ControlPlane, apply
from operator_process import REPO, OperatorProcess, failed
from real_cluster import TEST_IMAGE, Kube, RealOperator, resource, wait
from test_least_privilege import RBAC_KINDS, _render, _token_kubeconfig

from eft_operator.render import OUTCOME_FINALIZER
from eft_operator.status import RECONCILE_FAILED

pytestmark = pytest.mark.slow
LEASE_DURATION = 15.0  # the default (EFT_LEASE_DURATION)


@pytest.fixture
def k(kube: Any, eft_crd: Any, kube_namespace: str) -> Kube:
    return Kube(kube, kube_namespace)


@pytest.fixture
def replicas(
    control_plane: ControlPlane, k: Kube, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., OperatorProcess]]:
    """Start operator replicas watching the test's namespace, sharing one Lease there; all stopped after,
    and their logs printed when the test failed (pytest shows them under the failure)."""
    started: list[OperatorProcess] = []

    def start(identity: str, **options: Any) -> OperatorProcess:
        options.setdefault("watch", (k.ns,))
        options.setdefault("lease_namespace", k.ns)
        proc = OperatorProcess(control_plane.kubeconfig, tmp_path, identity, **options).start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
        if failed(request):
            print(f"--- log of operator replica {proc.identity!r} (last 200 lines) ---")
            print("\n".join(proc.log().splitlines()[-200:]))
    release_all(control_plane, k.ns)


def release_all(control_plane: ControlPlane, namespace: str) -> None:
    """After the operators stopped: release the test namespace's Jobs and Pods, so that deleting it at the
    end does not leave it Terminating for the rest of the session (a cluster-wide operator started by a
    later test would find it)."""
    done = _release(control_plane, "--namespace", namespace)
    assert done.returncode == 0, done.stdout + done.stderr


def reconciled(k: Kube, names: list[str]) -> bool:
    """Every resource has its one Job and a status for its generation that names it (no failure pending)."""
    jobs: dict[str, list[str]] = {}
    for job in k.jobs():
        jobs.setdefault(job["metadata"]["labels"].get("finetune.eft.dev/name", ""), []).append(job["metadata"]["name"])
    by_name = {e["metadata"]["name"]: e for e in k.efts()}
    for name in names:
        eft = by_name.get(name)
        if eft is None or len(jobs.get(name, [])) != 1:
            return False
        status = eft.get("status") or {}
        run = status.get("currentRun") or {}
        if status.get("observedGeneration") != eft["metadata"]["generation"] or run.get("jobName") != jobs[name][0]:
            return False
        if any(c.get("reason") == RECONCILE_FAILED for c in status.get("conditions") or []):
            return False
    return True


def one_leader(a: OperatorProcess, b: OperatorProcess) -> OperatorProcess:
    def leader() -> OperatorProcess | None:
        leading = [p for p in (a, b) if p.leading()]
        return leading[0] if len(leading) == 1 else None

    found: OperatorProcess = wait(leader, 40, "exactly one leader")
    return found


def burst(k: Kube, names: list[str], parallel: int = 8, pause: float = 0.0) -> threading.Thread:
    """Create ``names`` from ``parallel`` threads in the background (each waiting ``pause`` s first), each
    create retried until the API takes it."""

    def create(name: str) -> None:
        time.sleep(pause)
        while True:
            try:
                k.create(resource(name))
                return
            except Exception as exc:  # the API server may be down: try again, as a CI pipeline would
                if "AlreadyExists" in str(exc):
                    return
                time.sleep(1)

    def run() -> None:
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(create, names))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_two_replicas_one_leader_only_it_creates_jobs(k: Kube, replicas: Callable[..., OperatorProcess]) -> None:
    a, b = replicas("replica-a"), replicas("replica-b")
    leader = one_leader(a, b)
    standby = b if leader is a else a
    for proc in (a, b):  # both ready; the body names the leader (once the standby has read the Lease)
        status, body = wait(lambda p=proc: (r := p.probe("/readyz"))[1].get("holder") and r, 10, "a holder")
        assert status == 200 and body["holder"] == leader.identity and body["leader"] is (proc is leader)
    assert standby.probe("/leader")[0] == 503
    assert (leader.metric("eft_leader"), standby.metric("eft_leader")) == (1.0, 0.0)  # both scraped
    names = [f"ha-{i}" for i in range(5)]
    for name in names:
        k.create(resource(name))
    wait(lambda: reconciled(k, names), 30, "every resource reconciled")
    assert leader.log().count("Created Job") == len(names)
    assert "Created Job" not in standby.log() and "Starting the watch-stream" not in standby.log()
    assert "Pausing" not in leader.log() + standby.log()  # kopf peering never freezes anything
    # A graceful stop (a rollout, a drain) releases the Lease: the standby leads at its next try, long
    # before the lease duration.
    stopped = time.monotonic()
    assert leader.stop() == 0
    # kopf waits 5 s for tasks it deems hung before it returns; its waiter on the stop flag was one
    # until the cleanup set the flag (every stop took 5.0 s, now about 0.3 s)
    assert (took := time.monotonic() - stopped) < 5, f"the graceful stop took {took:.1f} s"
    wait(standby.leading, LEASE_DURATION, "the standby to lead")
    handover = time.monotonic() - stopped
    assert handover < LEASE_DURATION / 2, f"the handover took {handover:.1f} s: the Lease was not released"
    assert "Released Lease" in leader.log()


def test_sigkill_the_leader_mid_burst_the_standby_finishes_it(
    k: Kube, replicas: Callable[..., OperatorProcess]
) -> None:
    a, b = replicas("replica-a"), replicas("replica-b")
    leader = one_leader(a, b)
    standby = b if leader is a else a
    names = [f"burst-{i:02d}" for i in range(50)]
    creator = burst(k, names)
    wait(lambda: len(k.jobs()) >= 10, 60, "the leader to be mid-burst")
    leader.kill(signal.SIGKILL)
    killed = time.monotonic()
    creator.join(120)
    wait(lambda: reconciled(k, names), LEASE_DURATION + 30, "all 50 reconciled after the leader died")
    took = time.monotonic() - killed
    assert standby.leading()
    jobs = k.jobs()
    assert len(jobs) == 50 and len({j["metadata"]["name"] for j in jobs}) == 50  # one Job per generation
    print(f"all 50 reconciled {took:.1f} s after the SIGKILL (bound {LEASE_DURATION + 30:.0f} s)")


def test_an_api_server_outage_mid_burst_heals_by_itself(
    k: Kube, control_plane: ControlPlane, replicas: Callable[..., OperatorProcess]
) -> None:
    # The test plays the kubelet; the restarted process has a new identity (hostname + random suffix, as
    # in a pod), so it must wait out the lease duration after the API is back: the worst case.
    op = replicas("solo", restart_after=5.0, EFT_LEADER_IDENTITY="")
    wait(op.leading, 40, "the operator to lead")
    names = [f"out-{i:02d}" for i in range(50)]
    creator = burst(k, names, parallel=2, pause=0.3)  # about 7 resources a second
    wait(lambda: len(k.efts()) >= 20, 60, "the burst to be under way")
    control_plane.stop_apiserver()
    try:
        time.sleep(60)
    finally:
        control_plane.start_apiserver()
    recovered = time.monotonic()
    try:
        assert not reconciled(k, names)  # the outage interrupted the burst
        wait(lambda: reconciled(k, names), 60, "every resource reconciled within a minute of recovery")
        took = time.monotonic() - recovered
        creator.join(10)
        assert op.exits == [1]  # it could not renew its Lease, exited 1, came back as a standby, leads again
        print(f"all 50 reconciled {took:.1f} s after the API server came back; operator exits: {op.exits}")
    finally:  # the tests after this one need Pods in new namespaces: the controller manager must be back
        print(f"the controller manager served a new namespace again after {control_plane.wait_controllers():.0f} s")


def _release(
    control_plane: ControlPlane, *args: str, extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": os.pathsep.join([str(REPO / "operator"), str(REPO / "trainer_image")]),
        "KUBECONFIG": str(control_plane.kubeconfig),
        **(extra or {}),
    }
    cmd = [sys.executable, "-m", "eft_operator", "release-finalizers", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)


def _held(k: Kube, owner: str) -> list[str]:
    """The Jobs and Pods of ``owner`` that still carry the operator's finalizer."""
    objs = k.jobs(owner) + k.pods(owner)
    return [o["metadata"]["name"] for o in objs if OUTCOME_FINALIZER in (o["metadata"].get("finalizers") or [])]


def test_a_namespace_deleted_while_the_operator_is_down_goes_once_the_command_runs(
    kube: Any, eft_crd: Any, control_plane: ControlPlane, replicas: Callable[..., OperatorProcess], k: Kube
) -> None:
    doomed = Kube(kube, f"t-{uuid.uuid4().hex[:10]}")
    k.core.create_namespace({"metadata": {"name": doomed.ns}})
    op = replicas("solo", watch=(doomed.ns,))
    for name in ("a", "b"):
        doomed.create(resource(name))
    wait(lambda: _held(doomed, "a") and _held(doomed, "b") and doomed.pods("a") and doomed.pods("b"), 60, "Jobs+Pods")
    assert op.stop() == 0
    doomed.core.delete_namespace(doomed.ns)
    time.sleep(5)
    phase = doomed.core.read_namespace(doomed.ns).status.phase
    assert phase == "Terminating" and _held(doomed, "a"), "the finalizer holds the namespace (the bug)"
    done = _release(control_plane, "--namespace", doomed.ns)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "from 2 Jobs and 2 Pods" in done.stdout, done.stdout

    def gone() -> bool:
        return doomed.ns not in {n.metadata.name for n in doomed.core.list_namespace().items}

    wait(gone, 60, "the namespace to go")


def test_a_namespace_dropped_from_the_watch_list_is_released_at_startup(
    kube: Any, replicas: Callable[..., OperatorProcess], k: Kube
) -> None:
    other = Kube(kube, f"t-{uuid.uuid4().hex[:10]}")
    k.core.create_namespace({"metadata": {"name": other.ns}})
    try:
        op = replicas("first", watch=(k.ns, other.ns))
        other.create(resource("left"))
        wait(lambda: _held(other, "left") and other.pods("left"), 60, "a Job and a Pod with the finalizer")
        assert op.stop() == 0
        replicas("second", watch=(k.ns,))
        wait(lambda: not _held(other, "left"), 60, "the dropped namespace's Job and Pod released")
        assert other.jobs("left") and other.pods("left")  # released, not deleted
    finally:
        other.core.delete_namespace(other.ns)


def test_the_charts_ha_install_works_under_its_own_rbac(
    control_plane: ControlPlane, kube: Any, dyn: Any, eft_crd: Any, k: Kube, tmp_path: Path
) -> None:
    """replicaCount 2 rendered, its RBAC and PodDisruptionBudget applied on the real server; two replicas
    with the chart's env and a token of its ServiceAccount elect one leader, and the pre-delete hook's
    command releases the Jobs, all without a 403."""
    release_ns = f"eft-{uuid.uuid4().hex[:8]}"
    k.core.create_namespace({"metadata": {"name": release_ns}})
    values = {
        "fullnameOverride": f"ha-{uuid.uuid4().hex[:6]}",
        "replicaCount": 2,
        "rbac": {"scope": "namespaced"},
        "watchNamespaces": [k.ns],
        "admissionPolicy": {"enabled": False},
        "crds": {"enabled": False},
    }
    docs = _render(values, "ha", release_ns)
    for doc in docs:
        if doc["kind"] in RBAC_KINDS | {"PodDisruptionBudget"}:
            apply(dyn, doc)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    kubeconfig = _token_kubeconfig(control_plane, kube, pod["serviceAccountName"], release_ns, tmp_path / "kc")
    env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    for own in ("EFT_HEALTH_PORT", "EFT_METRICS_PORT"):  # two processes on one host: a free port each
        env.pop(own)
    a, b = (
        OperatorProcess(kubeconfig, tmp_path, name, watch=(k.ns,), lease_namespace=release_ns, **env).start()
        for name in ("pod-a", "pod-b")
    )
    try:
        one_leader(a, b)
        k.create(resource("chart-ha"))
        wait(lambda: _held(k, "chart-ha") and k.pods("chart-ha"), 60, "a Job and a Pod with the finalizer")
        for proc in (a, b):
            proc.stop()
        hook = next(d for d in docs if d["kind"] == "Job")["spec"]["template"]["spec"]["containers"][0]
        hook_env = {e["name"]: e["value"] for e in hook["env"]}
        assert hook_env == {"EFT_WATCH_NAMESPACES": k.ns}
        done = _release(control_plane, "--kubeconfig", str(kubeconfig), extra=hook_env)
        assert done.returncode == 0 and "from 1 Jobs and 1 Pods" in done.stdout, done.stdout + done.stderr
        assert not _held(k, "chart-ha")
    finally:
        for proc in (a, b):
            proc.stop()
        k.core.delete_namespace(release_ns)
    logs = a.log() + b.log()
    assert "Forbidden" not in logs and " 403" not in logs, logs[-3000:]


def test_the_resync_finishes_what_no_event_will_wake(
    control_plane: ControlPlane, k: Kube, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resource whose creation event was lost (as an outage can lose it) gets its Job from the resync."""
    import eft_operator.handlers as handlers_module
    import eft_operator.resync as resync_module
    from eft_operator.config import Settings

    async def lost(*_: Any, **__: Any) -> None:
        return None  # the create event's pass never happens (the handler itself runs)

    monkeypatch.setattr(handlers_module, "reconcile_resource", lost)
    monkeypatch.setattr(resync_module, "RESYNC_INTERVAL", 1.0)
    op = RealOperator(control_plane.kubeconfig, Settings(trainer_image=TEST_IMAGE, watch_namespaces=(k.ns,)))
    op.start()
    try:
        k.create(resource("lost"))
        wait(lambda: reconciled(k, ["lost"]), 20, "the resync to create the Job")
        # The resync logs its count once its passes are done, which may be just after the status is written.
        resynced = "The resync reconciled 1 resources"
        wait(lambda: any(resynced in line for line in op.records.lines), 10, "the resync's own log line")
        wait(lambda: k.event_reasons("lost"), 10, "the pass's Events")  # posted from the resync too
        assert not [line for line in op.records.lines if "LookupError" in line or "ReconcileFailed" in line]
    finally:
        op.stop()
        release_all(control_plane, k.ns)
