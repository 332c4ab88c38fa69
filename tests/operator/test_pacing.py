"""Jobs first under a burst (eft_operator.pacing): deferrable work waits while creation passes are pending,
never longer than its bound; and in the reconciler, the status writes of a burst come after its Jobs."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import pytest

from eft_operator import children
from eft_operator.config import Settings
from eft_operator.pacing import Pacing
from eft_operator.reconciler import Reconciler

LOG = logging.getLogger("test")


async def test_with_no_creation_pending_a_turn_comes_at_once() -> None:
    assert await Pacing(quiet=10.0, longest=10.0).turn() == 0.0


async def test_deferred_work_waits_until_the_last_creation_is_done_and_a_quiet_spell_passed() -> None:
    pacing = Pacing(quiet=0.02, longest=30.0)
    first, second = pacing.ticket(), pacing.ticket()
    waiter = asyncio.create_task(pacing.turn())
    first.done()
    first.done()  # idempotent: one ticket gives back one hold
    await asyncio.sleep(0.1)  # many quiet spells long: only the pending second creation can hold it
    assert not waiter.done() and pacing.pending == 1
    second.done()
    waited = await asyncio.wait_for(waiter, 5.0)
    assert 0.02 <= waited < 5.0


async def test_a_creation_that_starts_in_the_quiet_spell_holds_the_work_again() -> None:
    pacing = Pacing(quiet=0.05, longest=30.0)
    pacing.ticket().done()
    waiter = asyncio.create_task(pacing.turn())
    late = pacing.ticket()  # the next resource of the burst arrives before the spell is over
    await asyncio.sleep(0.2)
    assert not waiter.done()
    late.done()
    await asyncio.wait_for(waiter, 5.0)


async def test_no_work_waits_longer_than_the_bound_even_if_creations_never_end() -> None:
    pacing = Pacing(quiet=0.01, longest=0.05)
    pacing.ticket()  # never given back (a pass stuck on a slow API server)
    waited = await asyncio.wait_for(pacing.turn(), 5.0)
    assert waited >= 0.05


class BurstClient:
    """Creates children as a server would, logging every write, so the order of a burst's writes shows."""

    def __init__(self) -> None:
        self.log: list[str] = []

    async def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.log.append(f"get {kind} {name}")
        return None

    async def ensure(self, body: dict[str, Any], owner_uid: str) -> tuple[dict[str, Any], bool]:
        self.log.append(f"create {body['kind']} {body['metadata']['name']}")
        await asyncio.sleep(0)  # a real request yields to the loop
        meta = {**body["metadata"], "creationTimestamp": "2026-12-05T01:00:00Z"}
        return {**body, "metadata": meta}, True

    async def patch(self, kind: str, namespace: str, name: str, patch: Any, subresource: str | None = None) -> Any:
        self.log.append(f"patch {kind} {name}")
        return {}

    async def close(self) -> None:
        pass


def _resource(name: str) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ml", "name": name, "uid": f"u-{name}", "generation": 1},
        "spec": {
            "model": {"base": "sentence-transformers/all-MiniLM-L6-v2"},
            "data": {"train": {"uri": "s3://bucket/pairs.jsonl", "format": "pairs"}},
            "output": {"uri": "s3://bucket/runs/"},
        },
        "status": {},
    }


async def test_in_a_burst_every_job_is_created_before_any_status_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without pacing the first resource's status write (and its Event, and kopf's annotation patch) went
    between the later resources' creations, and each Job waited for the work of all the earlier ones."""
    monkeypatch.setattr("kopf.event", lambda *a, **k: None)  # Events are posted by kopf's own machinery
    client = BurstClient()
    reconciler = Reconciler(Settings(trainer_image="registry.test/eft-trainer:1"))
    reconciler.pacing = Pacing(quiet=0.05, longest=30.0)
    reconciler.connect(cast(children.Client, client))
    names = [f"r{i}" for i in range(20)]
    passes = []
    for name in names:  # the creation events arrive one after another, as from a watch
        passes.append(
            asyncio.create_task(reconciler.reconcile("ml", name, logger=LOG, fresh_body=_resource(name), creating=True))
        )
        await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(*passes), 10.0)
    jobs = [i for i, line in enumerate(client.log) if line.startswith("create Job")]
    writes = [i for i, line in enumerate(client.log) if line.startswith("patch EmbeddingFinetune")]
    assert len(jobs) == len(writes) == len(names)
    assert max(jobs) < min(writes), client.log
    await reconciler.close()
