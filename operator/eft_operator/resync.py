"""Never give up: a periodic resync and retries without a cap, with backoff to a ceiling.

Every :data:`RESYNC_INTERVAL` seconds the operator lists the EmbeddingFinetunes it watches and runs a
pass for each one that an interruption may have left behind (:func:`needs_pass`): status that does not
describe the current generation yet, a failure condition (``ReconcileFailed``: what the pass was waiting
for), or a pass that failed in this process. Watch events and kopf's own retries do the rest; the resync
is the net under them, so whatever an API outage interrupted is finished within about a minute after the
API server is back. A failed list (the API is still down) is tried again at the next interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from eft_api.spec import API_GROUP, API_VERSION, PLURAL
from eft_operator import children
from eft_operator.reconciler import Reconciler
from eft_operator.release import pages
from eft_operator.status import RECONCILE_FAILED

logger = logging.getLogger("eft_operator.resync")
#: Seconds between resyncs.
RESYNC_INTERVAL = 30.0
#: Handler retries: the first delay, doubled each time up to the ceiling, then the ceiling for ever.
RETRY_BASE = 1.0
RETRY_CEILING = 30.0


def retry_delay(retry: int) -> float:
    """Seconds before retry number ``retry`` (0 is the first retry)."""
    return min(RETRY_CEILING, RETRY_BASE * 2.0 ** min(max(retry, 0), 16))


class Backoffs:
    """kopf's request backoffs without an end: 1, 2, 4, 8, 16, then 30 s for ever (re-iterable, no length)."""

    def __iter__(self) -> Iterator[float]:
        retry = 0
        while True:
            yield retry_delay(retry)
            retry += 1


def needs_pass(body: Mapping[str, Any], failed: Iterable[tuple[str, str]]) -> bool:
    """Whether the resync should run a pass for ``body`` (pure)."""
    meta = body.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return False
    if (str(meta.get("namespace")), str(meta.get("name"))) in set(failed):
        return True
    status = body.get("status") or {}
    if status.get("observedGeneration") != meta.get("generation"):
        return True
    return any(c.get("reason") == RECONCILE_FAILED for c in status.get("conditions") or [])


def _paths(namespaces: tuple[str, ...]) -> list[str]:
    if not namespaces:
        return [f"/apis/{API_GROUP}/{API_VERSION}/{PLURAL}"]
    return [f"/apis/{API_GROUP}/{API_VERSION}/namespaces/{ns}/{PLURAL}" for ns in namespaces]


async def resync_once(reconciler: Reconciler, context: contextvars.Context | None = None) -> int:
    """One resync: a pass for every resource that needs one; returns how many were passed.

    ``context``: a resource handler's context (:func:`remember_context`), in which kopf can post Events.
    """
    count = 0
    for path in _paths(reconciler.settings.watch_namespaces):
        async for page in pages(reconciler.client, path):  # a page at a time in memory, not the whole list
            for meta in [body["metadata"] for body in page if needs_pass(body, reconciler.failed)]:
                count += 1
                one = reconciler.reconcile(str(meta["namespace"]), str(meta["name"]), logger=logger)
                with contextlib.suppress(Exception):  # counted, logged and in status already; tried again later
                    await asyncio.create_task(one, context=context)
    return count


def remember_context(memo: Any) -> None:
    """Called from a resource handler: keep its context for the resync's passes (kopf posts Events only
    from the context it gives its handlers). kopf gives each resource a shallow copy of the memo, so the
    context goes into the dict that :func:`on_startup` put there, which every copy shares."""
    shared = memo.get("resync")
    if shared is not None and "context" not in shared:
        shared["context"] = contextvars.copy_context()


async def resync_forever(memo: Any, interval: float = RESYNC_INTERVAL) -> None:
    """Resync every ``interval`` seconds, once a resource handler has run (no resource seen: nothing to do)."""
    reconciler: Reconciler = memo["reconciler"]
    while True:
        await asyncio.sleep(interval)
        context = memo["resync"].get("context")
        if context is None:
            continue
        try:
            passed = await resync_once(reconciler, context)
        except children.APIError as exc:
            logger.warning(f"The resync could not list the resources ({exc}); trying again in {interval:g} s.")
            continue
        if passed:
            logger.info(f"The resync reconciled {passed} resources left behind.")


async def on_startup(**kw: Any) -> None:
    """kopf start-up handler: start the resync (after the ``configure`` handler connected the client)."""
    memo = kw["memo"]
    interval = float(memo.get("resync_interval", RESYNC_INTERVAL))
    memo["resync"] = {}
    memo["resync_task"] = asyncio.create_task(resync_forever(memo, interval), name="resync")


async def on_cleanup(**kw: Any) -> None:
    task = kw["memo"].get("resync_task")
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
