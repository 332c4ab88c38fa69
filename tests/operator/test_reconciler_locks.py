"""The reconciler's per-resource state, with a scripted API client (no server: these are about the order of
awaits, which a fake shows exactly): a resource that does not exist leaves nothing behind, and a failed pass
records its failure before the next pass of the same resource may start."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import pytest

from eft_operator import children
from eft_operator.config import Settings
from eft_operator.reconciler import Reconciler

LOG = logging.getLogger("test")
NS = "ml"


def _resource(name: str) -> dict[str, Any]:
    meta = {"namespace": NS, "name": name, "uid": "u-1", "generation": 1}
    return {"metadata": meta, "spec": {}, "status": {}}


def _child(owner: str) -> dict[str, Any]:
    labels = {"finetune.eft.dev/name": owner, "finetune.eft.dev/run": "r-1"}
    meta = {
        "namespace": NS,
        "name": f"{owner}-job",
        "labels": labels,
        "finalizers": ["finetune.eft.dev/record-outcome"],
    }
    return {"kind": "Job", "metadata": meta}


class ScriptedClient:
    """Answers ``get`` from a script of callables (one per call, in order) and logs every call."""

    def __init__(self, *script: Any) -> None:
        self.script = list(script)
        self.log: list[str] = []
        self.released: list[str] = []

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.log.append(f"get {name}")
        step = self.script.pop(0) if self.script else None
        result = step() if callable(step) else step
        if asyncio.iscoroutine(result):
            result = await result
        return cast(dict[str, Any] | None, result)

    async def patch(self, kind: str, namespace: str, name: str, patch: Any, subresource: str | None = None) -> Any:
        self.log.append(f"patch {name}")
        return {}

    async def release(self, obj: Any) -> bool:
        self.released.append(obj["metadata"]["name"])
        return True

    async def close(self) -> None:
        pass


def _reconciler(client: ScriptedClient) -> Reconciler:
    reconciler = Reconciler(Settings(trainer_image="registry.test/eft-trainer:1"))
    reconciler.connect(cast(children.Client, client))
    return reconciler


async def test_child_events_of_a_resource_that_does_not_exist_leave_no_state() -> None:
    """Each event of an orphaned Job once left a lock behind for good: memory grew with every event."""
    client = ScriptedClient()
    reconciler = _reconciler(client)
    for i in range(50):
        await reconciler.reconcile(NS, f"gone-{i}", logger=LOG, child=_child(f"gone-{i}"))
    assert reconciler.tracked() == set()
    assert len(client.released) == 50  # the orphans' finalizers went, as before
    await reconciler.close()


async def test_a_failed_pass_records_its_failure_before_the_next_pass_starts() -> None:
    """The failure's condition was once patched outside the resource's lock, so a pass that started meanwhile
    could read the status before the failure was recorded and write over it."""
    reconciler: Reconciler
    later: list[asyncio.Task[None]] = []

    def fail() -> None:
        raise children.APIError(503, "ServiceUnavailable", "etcd is away", "GET", "/apis/x")

    async def read_for_the_report() -> dict[str, Any]:
        # While the failure is being recorded, the resource changes again: a second pass is due.
        later.append(asyncio.create_task(reconciler.reconcile(NS, "demo", logger=LOG)))
        for _ in range(20):  # give a pass that does not wait for the lock every chance to run first
            await asyncio.sleep(0)
        return _resource("demo")

    client = ScriptedClient(fail, read_for_the_report, None)
    reconciler = _reconciler(client)
    with pytest.raises(children.APIError):
        await reconciler.reconcile(NS, "demo", logger=LOG)
    await asyncio.gather(*later)
    assert client.log[:4] == ["get demo", "get demo", "patch demo", "get demo"]
    await reconciler.close()
