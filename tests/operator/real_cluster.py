"""The operator against the REAL control plane (envtest: kube-apiserver + kube-controller-manager v1.36).

:class:`RealOperator` runs the operator's real handlers with ``kopf.operator`` in its own thread and event
loop, logged in with a kubeconfig (the admin's, or a restricted user's made by
``ControlPlane.client_certificate`` or a ServiceAccount token), and records every log line it writes.
The Job controller, the garbage collector, the quota controller and the TTL controller are real; there is
no kubelet and no scheduler, so tests play them with :func:`set_pod_status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kopf
import yaml

from eft_api import contract
from eft_api.spec import API_GROUP, API_VERSION, KIND, PLURAL
from eft_operator.config import Settings
from eft_operator.handlers import register
from eft_operator.reconciler import Reconciler

TEST_IMAGE = "registry.test/eft-trainer:1.2.3"


def kubeconfig_login(path: Path) -> Callable[..., kopf.ConnectionInfo]:
    """A kopf login handler that reads one kubeconfig file (client certificate or token)."""
    doc = yaml.safe_load(path.read_text())
    context = next(c["context"] for c in doc["contexts"] if c["name"] == doc["current-context"])
    cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in doc["users"] if u["name"] == context["user"])

    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(
            server=cluster["server"],
            ca_data=cluster.get("certificate-authority-data"),
            certificate_data=user.get("client-certificate-data"),
            private_key_data=user.get("client-key-data"),
            token=user.get("token"),
            scheme="Bearer" if user.get("token") else None,
        )

    return login


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.name}: {record.getMessage()}")


class RealOperator:
    """The operator's real kopf loop, in its own thread, against a real API server."""

    def __init__(self, kubeconfig: Path, settings: Settings, **reconciler_options: Any) -> None:
        self.kubeconfig = kubeconfig
        self.settings = settings
        self.reconciler = Reconciler(settings, **reconciler_options)
        self.thread: threading.Thread | None = None
        self.stop_flag = threading.Event()
        self.records = _Records()
        self.started = threading.Event()

    async def _main(self) -> None:
        registry = register(kopf.OperatorRegistry())
        kopf.on.login(id="kubeconfig", registry=registry)(kubeconfig_login(self.kubeconfig))

        def ready(**_: Any) -> None:
            self.started.set()

        kopf.on.startup(id="test-started", registry=registry)(ready)
        task = asyncio.create_task(
            kopf.operator(
                registry=registry,
                memo=kopf.Memo(reconciler=self.reconciler, metrics_port=None, kubeconfig=str(self.kubeconfig)),
                clusterwide=self.settings.clusterwide,
                namespaces=list(self.settings.watch_namespaces),
                standalone=True,
            )
        )
        while not self.stop_flag.is_set() and not task.done():
            await asyncio.sleep(0.05)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    def start(self) -> RealOperator:
        logging.getLogger().addHandler(self.records)
        logging.getLogger().setLevel(logging.DEBUG)
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)
        self.thread.start()
        assert self.started.wait(30), "the operator did not start"
        return self

    def stop(self) -> None:
        if self.thread is not None:
            self.stop_flag.set()
            self.thread.join(15)
            self.thread = None
        logging.getLogger().removeHandler(self.records)


def resource(name: str, **spec_over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"base": "sentence-transformers/all-MiniLM-L6-v2"},
        "data": {"train": {"uri": "s3://bucket/pairs.jsonl", "format": "pairs"}},
        "output": {"uri": "s3://bucket/runs/"},
        "resources": {"gpus": 0, "cpu": "1", "memory": "1Gi", "workDirSize": "1Gi"},
    }
    spec.update(spec_over)
    return {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND, "metadata": {"name": name}, "spec": spec}


class Kube:
    """Test-side reads and writes on the real API server (as its admin)."""

    def __init__(self, api: Any, namespace: str) -> None:
        from kubernetes import client

        self.api = api
        self.ns = namespace
        self.core = client.CoreV1Api(api)
        self.batch = client.BatchV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def create(self, doc: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = self.custom.create_namespaced_custom_object(API_GROUP, API_VERSION, self.ns, PLURAL, doc)
        return out

    def patch_eft(self, name: str, patch: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(API_GROUP, API_VERSION, self.ns, PLURAL, name, patch)

    def delete_eft(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(API_GROUP, API_VERSION, self.ns, PLURAL, name)

    def eft(self, name: str) -> dict[str, Any]:
        out: dict[str, Any] = self.custom.get_namespaced_custom_object(API_GROUP, API_VERSION, self.ns, PLURAL, name)
        return out

    def efts(self) -> list[dict[str, Any]]:
        out = self.custom.list_namespaced_custom_object(API_GROUP, API_VERSION, self.ns, PLURAL)
        return list(out["items"])

    def condition(self, name: str, ctype: str) -> dict[str, Any]:
        for c in (self.eft(name).get("status") or {}).get("conditions") or []:
            if c["type"] == ctype:
                return dict(c)
        return {}

    def jobs(self, owner: str | None = None) -> list[dict[str, Any]]:
        items = self.api.sanitize_for_serialization(self.batch.list_namespaced_job(self.ns).items)
        return [j for j in items if owner is None or j["metadata"]["labels"].get(contract.LABEL_NAME) == owner]

    def pods(self, owner: str | None = None) -> list[dict[str, Any]]:
        items = self.api.sanitize_for_serialization(self.core.list_namespaced_pod(self.ns).items)
        return [
            p for p in items if owner is None or (p["metadata"].get("labels") or {}).get(contract.LABEL_NAME) == owner
        ]

    def configmaps(self, owner: str) -> list[dict[str, Any]]:
        items = self.api.sanitize_for_serialization(self.core.list_namespaced_config_map(self.ns).items)
        return [c for c in items if (c["metadata"].get("labels") or {}).get(contract.LABEL_NAME) == owner]

    def events(self, name: str, kind: str = KIND) -> list[dict[str, Any]]:
        items = self.api.sanitize_for_serialization(self.core.list_namespaced_event(self.ns).items)
        return [e for e in items if e["involvedObject"].get("name") == name and e["involvedObject"].get("kind") == kind]

    def event_reasons(self, name: str) -> list[str]:
        return [str(e.get("reason")) for e in self.events(name)]

    def set_pod_status(self, pod: str, status: dict[str, Any]) -> None:
        """Play the kubelet (or the scheduler): patch a Pod's status subresource."""
        self.core.patch_namespaced_pod_status(pod, self.ns, {"status": status})

    def quota(self, hard: dict[str, str]) -> str:
        """A ResourceQuota in the namespace, once the quota controller has counted it (admission uses it)."""
        name = f"q-{uuid.uuid4().hex[:6]}"
        self.core.create_namespaced_resource_quota(self.ns, {"metadata": {"name": name}, "spec": {"hard": hard}})
        wait(lambda: self.core.read_namespaced_resource_quota(name, self.ns).status.hard, 30, "the quota counted")
        return name


def wait(check: Callable[[], Any], timeout: float = 20, what: str = "", interval: float = 0.1) -> Any:
    """Poll ``check`` every ``interval`` seconds until it returns something true (returned), or fail after
    ``timeout`` seconds naming ``what`` and the last assertion ``check`` raised (its say on what is missing)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (AssertionError, KeyError, IndexError, TypeError) as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or check}: {last!r}")


#: How long the garbage collector of kube-controller-manager may take to remove a deleted owner's children.
#: Its pace, not the operator's: it learns of a new resource type (the CRD of the session) at its discovery
#: resync (every 30 s), removes a Job's pods in a second pass once the operator has released its finalizer,
#: and on a loaded machine takes minutes for that. A cascade that is broken (a wrong owner reference, a
#: finalizer never released) leaves a child for good, so the wait still fails, naming what was left.
GC_DEADLINE = 180.0


def wait_children_gone(k: Kube, name: str, timeout: float = GC_DEADLINE) -> None:
    """Until the Jobs, Pods and ConfigMaps of resource ``name`` are gone (the garbage collector's work)."""

    def gone() -> bool:
        left = [("Job", o) for o in k.jobs(name)] + [("Pod", o) for o in k.pods(name)]
        left += [("ConfigMap", o) for o in k.configmaps(name)]
        assert not left, "left: " + "; ".join(
            f"{kind} {o['metadata']['name']} (finalizers {o['metadata'].get('finalizers') or []}, "
            f"{'being deleted' if o['metadata'].get('deletionTimestamp') else 'not being deleted'})"
            for kind, o in left
        )
        return True

    wait(gone, timeout, f"the children of {name} to go", interval=1.0)


def succeeded_message(run_id: str) -> str:
    return contract.TerminationMessage(
        outcome="Succeeded",
        reason="Succeeded",
        run_id=run_id,
        headline=contract.Headline(primary_metric="ndcg@10", dimension=384, base=0.531, finetuned=0.590, gain=0.059),
        artifacts=contract.Artifacts(model="s3://bucket/runs/x/model/", report="s3://r", manifest="s3://m"),
    ).to_json()


def pod_succeeded(run_id: str) -> dict[str, Any]:
    """A pod status as the kubelet writes it when the trainer exited 0 with its summary."""
    return pod_terminated(0, succeeded_message(run_id))


def pod_terminated(code: int, message: str) -> dict[str, Any]:
    """A pod status as the kubelet writes it when its container exited ``code`` with ``message``."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    terminated = {
        "exitCode": code,
        "reason": "Completed" if code == 0 else "Error",
        "message": message,
        "startedAt": now,
        "finishedAt": now,
    }
    return {
        "phase": "Succeeded" if code == 0 else "Failed",
        "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted"}],
        "containerStatuses": [
            {
                "name": "trainer",
                "image": TEST_IMAGE,
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {"terminated": terminated},
            }
        ],
    }
