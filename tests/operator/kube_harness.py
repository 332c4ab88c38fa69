"""The Kubernetes API for operator tests (a uniquely named module; conftest.py exposes its fixtures): kmock (an in-memory API server over real HTTP) with the real kopf loop.

``cluster`` registers the EmbeddingFinetune resource and the bundled built-ins in kmock; ``operator`` runs
the operator's real handlers (``eft_operator.handlers.register``) with ``kopf.operator`` in a task,
logged in to kmock, and waits until kopf's watches are open before the test creates objects (kmock
replays objects as ADDED, and an object created before the watch opens would be seen only then).

kmock's gaps, worked around here: it assigns no uid or resourceVersion (the helpers set a uid), ignores
label selectors (the operator filters in Python too), does no cascading delete, and has no PUT.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import kmock as kmock_lib
import kopf
import pytest

from eft_api.spec import API_GROUP, API_VERSION, KIND, PLURAL
from eft_operator.config import Settings
from eft_operator.handlers import register
from eft_operator.reconciler import Reconciler

EFT = f"{API_GROUP}/{API_VERSION}/{PLURAL}"
NS = "ml"
TEST_IMAGE = "registry.test/eft-trainer:1.2.3"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def resource(name: str = "demo", *, uid: str | None = None, generation: int = 1, **spec_over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "model": {"base": "sentence-transformers/all-MiniLM-L6-v2"},
        "data": {"train": {"uri": "s3://bucket/pairs.jsonl", "format": "pairs"}},
        "output": {"uri": "s3://bucket/runs/"},
        "storage": {"credentialsSecret": {"name": "s3-credentials"}},
        "resources": {"gpus": 0, "cpu": "2", "memory": "6Gi"},
    }
    spec.update(spec_over)
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {"name": name, "namespace": NS, "uid": uid or str(uuid.uuid4()), "generation": generation},
        "spec": spec,
    }


class Cluster:
    """Test-side access to the kmock API server: create, patch, read, wait."""

    def __init__(self, km: Any) -> None:
        self.km = km

    async def _call(self, method: str, path: str, body: Any = None, merge: bool = False) -> Any:
        headers = {"Content-Type": "application/merge-patch+json"} if merge else {}
        async with self.km.request(method, path, json=body, headers=headers) as resp:
            data = await resp.json()
            assert resp.status < 300, (resp.status, data)
            return data

    async def create(self, doc: dict[str, Any]) -> Any:
        return await self._call("POST", f"/apis/{API_GROUP}/{API_VERSION}/namespaces/{NS}/{PLURAL}", doc)

    async def patch_eft(self, name: str, patch: dict[str, Any]) -> Any:
        return await self._call(
            "PATCH", f"/apis/{API_GROUP}/{API_VERSION}/namespaces/{NS}/{PLURAL}/{name}", patch, True
        )

    async def create_job(self, doc: dict[str, Any]) -> Any:
        return await self._call("POST", f"/apis/batch/v1/namespaces/{NS}/jobs", doc)

    async def patch_job(self, name: str, patch: dict[str, Any]) -> Any:
        return await self._call("PATCH", f"/apis/batch/v1/namespaces/{NS}/jobs/{name}", patch, True)

    async def create_pod(self, doc: dict[str, Any]) -> Any:
        return await self._call("POST", f"/api/v1/namespaces/{NS}/pods", doc)

    async def patch_pod(self, name: str, patch: dict[str, Any]) -> Any:
        return await self._call("PATCH", f"/api/v1/namespaces/{NS}/pods/{name}", patch, True)

    async def delete_eft(self, name: str) -> Any:
        return await self._call("DELETE", f"/apis/{API_GROUP}/{API_VERSION}/namespaces/{NS}/{PLURAL}/{name}")

    async def delete_job(self, name: str) -> Any:
        return await self._call("DELETE", f"/apis/batch/v1/namespaces/{NS}/jobs/{name}")

    def objects(self, plural: str) -> list[dict[str, Any]]:
        out = []
        for (res, _ns, _name), obj in list(self.km.objects.items()):
            if res.plural == plural and not obj.deleted:
                out.append(obj.raw)
        return out

    def jobs(self, owner: str | None = None) -> list[dict[str, Any]]:
        return [
            j
            for j in self.objects("jobs")
            if owner is None or (j["metadata"].get("labels") or {}).get("finetune.eft.dev/name") == owner
        ]

    def eft(self, name: str) -> dict[str, Any]:
        found = [o for o in self.objects(PLURAL) if o["metadata"]["name"] == name]
        assert found, f"no EmbeddingFinetune {name}"
        return found[0]

    def condition(self, name: str, ctype: str) -> dict[str, Any]:
        for c in (self.eft(name).get("status") or {}).get("conditions") or []:
            if c["type"] == ctype:
                return dict(c)
        return {}

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """Events the operator posted (kmock stores one per generateName, so read the requests)."""
        out = []
        for req in list(self.km):
            if (
                req.resource is not None
                and req.resource.plural == "events"
                and str(req.method).upper().endswith("POST")
            ):
                data = req.data or {}
                if name is None or (data.get("involvedObject") or {}).get("name") == name:
                    out.append(data)
        return out

    def fetched_since(self, n: int, plural: str) -> bool:
        return any(
            r.resource is not None and r.resource.plural == plural and r.action == kmock_lib.action.FETCH
            for r in list(self.km)[n:]
        )

    def event_reasons(self, name: str) -> list[str]:
        return [e.get("reason") for e in self.events(name)]

    async def wait(self, check: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                value = check()
                if value:
                    return value
            except (AssertionError, KeyError, IndexError, TypeError) as exc:
                last = exc
            await asyncio.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what or check}: {last!r}")


@pytest.fixture
def cluster(kmock: Any) -> Cluster:
    kmock.resources.load_bundled()
    kmock.resources[EFT] = kmock_lib.ResourceInfo(
        kind=KIND,
        singular="embeddingfinetune",
        namespaced=True,
        shortnames={"eft"},
        verbs={"get", "list", "watch", "create", "patch", "update", "delete"},
        subresources={"status"},
    )
    return Cluster(kmock)


def connection(url: str) -> kopf.ConnectionInfo:
    """How the operator's own client reaches kmock (plain HTTP, no credentials)."""
    return kopf.ConnectionInfo(server=url, insecure=True)


class Operator:
    """A running operator (kopf's real loop over the real handlers) logged in to kmock.

    kopf runs in its own thread and event loop, as in a real process: when kopf stops it cancels the
    tasks it did not start, which in a shared loop would include kmock's request handlers.
    """

    def __init__(self, cluster: Cluster, settings: Settings) -> None:
        self.cluster = cluster
        # The metrics port comes from the settings (EFT_METRICS_PORT), as in production, not from the memo.
        self.settings = dataclasses.replace(settings, metrics_port=free_port())
        self.reconciler = Reconciler(self.settings)
        self.metrics_port = self.settings.metrics_port
        self.health_port = free_port()
        self.thread: threading.Thread | None = None
        self.stop_flag = threading.Event()

    async def _main(self, url: str) -> None:
        registry = register(kopf.OperatorRegistry())

        def login(**_: Any) -> kopf.ConnectionInfo:
            return kopf.ConnectionInfo(server=url, insecure=True)

        kopf.on.login(id="kmock", registry=registry)(login)
        task = asyncio.create_task(
            kopf.operator(
                registry=registry,
                memo=kopf.Memo(
                    reconciler=self.reconciler,
                    metrics_host="127.0.0.1",
                    connection=connection(url),
                ),
                clusterwide=True,
                standalone=True,
                liveness_endpoint=f"http://127.0.0.1:{self.health_port}/healthz",
            )
        )
        while not self.stop_flag.is_set() and not task.done():
            await asyncio.sleep(0.05)
        task.cancel()  # kopf's graceful exit idles ~5 s in its workers; a cancel is as good for tests
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task

    async def start(self) -> None:
        since = len(list(self.cluster.km))
        self.stop_flag = threading.Event()
        url = str(self.cluster.km.url)
        self.thread = threading.Thread(target=asyncio.run, args=(self._main(url),), daemon=True)
        self.thread.start()

        def watching() -> bool:
            plurals = {
                r.resource.plural
                for r in list(self.cluster.km)[since:]
                if r.resource is not None and r.action == kmock_lib.action.WATCH
            }
            return {PLURAL, "jobs", "pods"} <= plurals

        await self.cluster.wait(watching, timeout=15, what="kopf's watches to open")

    async def stop(self) -> None:
        if self.thread is None:
            return
        self.stop_flag.set()
        await asyncio.to_thread(self.thread.join, 10)
        self.thread = None


@pytest.fixture
async def operator(cluster: Cluster) -> AsyncIterator[Operator]:
    op = Operator(cluster, Settings(trainer_image=TEST_IMAGE))
    await op.start()
    try:
        yield op
    finally:
        await op.stop()
