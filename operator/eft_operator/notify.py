"""CloudEvents on run outcomes (``spec.notify``, issue 22): at least once, never blocking reconciliation.

* :func:`enqueue` (pure): when a pass records a run's end (Succeeded, Failed, or Failed with PromotionRejected),
  it adds a record to ``status.pendingNotifications`` in the SAME status write: the id the receiver dedupes on
  (``<run id>.<event>``), the event's type, time and data, and the receivers still to tell. A notification is
  thus as durable as the outcome it reports: an operator that restarts finds it there and sends it again.
* :class:`Notifier` (I/O): one task per resource sends each pending record to each of its URLs as a CloudEvent
  1.0 in HTTP binary mode, retried with growing delays (to a ceiling), and removes a URL from the record (and
  the record once empty) under the resource's lock after a 2xx. Failures count in
  ``eft_notifications_failed_total{event}`` and give a Warning Event (``NotificationFailed``) on the first
  failure of each receiver; the URL in messages is shown without credentials or query.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from cloudevents.core.bindings.http import to_binary_event
from cloudevents.core.v1.event import CloudEvent
from prometheus_client import Counter

from eft_api.retrain import NotifyEvent, parse_time
from eft_api.spec import API_GROUP, API_VERSION, PLURAL, EmbeddingFinetuneSpec
from eft_operator.status import FAILED, SUCCEEDED, TERMINAL_PHASES

log = logging.getLogger(__name__)

PENDING_FIELD = "pendingNotifications"
PENDING_LIMIT = 64
TYPE_PREFIX = "dev.eft.finetune."
RETRY_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
TIMEOUT = 10.0

Done = Callable[[str, str], Awaitable[None]]
Warn = Callable[[str, str], Awaitable[None]]


def outcome_event(run: Mapping[str, Any]) -> NotifyEvent | None:
    if run.get("phase") == SUCCEEDED:
        return NotifyEvent.RUN_SUCCEEDED
    if run.get("phase") == FAILED:
        return NotifyEvent.PROMOTION_REJECTED if run.get("reason") == "PromotionRejected" else NotifyEvent.RUN_FAILED
    return None


def source_of(namespace: str, name: str) -> str:
    return f"/apis/{API_GROUP}/{API_VERSION}/namespaces/{namespace}/{PLURAL}/{name}"


def event_data(status: Mapping[str, Any], run: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    """What a receiver needs: the run, why it ran, its results, artifacts, registry version, reindexRequired."""
    rid = run.get("id")
    entry = next((r for r in status.get("runs") or [] if r.get("id") == rid), run)
    results = dict(status.get("results") or {}) if (status.get("results") or {}).get("runId") == rid else {}
    data: dict[str, Any] = {
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "runId": rid,
        "generation": run.get("generation"),
        "phase": run.get("phase"),
        "reason": run.get("reason"),
        "message": run.get("message"),
        "trigger": run.get("trigger", "specChange"),
        "dataDigest": run.get("dataDigest"),
        "outputUri": run.get("outputUri"),
        "results": {k: entry[k] for k in ("primaryMetric", "dimension", "base", "finetuned", "gain") if k in entry},
        "artifacts": entry.get("artifacts") or (status.get("artifacts") if results else None),
        "registeredVersion": entry.get("registeredVersion"),
        "reindexRequired": results.get("reindexRequired"),
    }
    return {k: v for k, v in data.items() if v not in (None, {}, "")}


def enqueue(
    prev: Mapping[str, Any], status: dict[str, Any], spec: EmbeddingFinetuneSpec, body: Mapping[str, Any]
) -> None:
    """Add the notification of a run that ended in this pass to ``status`` (when spec.notify wants it)."""
    run = status.get("currentRun") or {}
    before = prev.get("currentRun") or {}
    if before.get("id") == run.get("id") and before.get("phase") in TERMINAL_PHASES:
        return  # recorded (and enqueued) by an earlier pass
    event = outcome_event(run)
    urls = [t.url for t in spec.notify or [] if event is not None and event in t.events]
    if event is None or not urls:
        return
    meta = body.get("metadata") or {}
    record = {
        "id": f"{run.get('id')}.{event.value}",
        "type": TYPE_PREFIX + event.value,
        "source": source_of(str(meta.get("namespace")), str(meta.get("name"))),
        "subject": str(run.get("id")),
        "time": run.get("completionTime"),
        "urls": urls,
        "data": event_data(status, run, meta),
    }
    pending = [p for p in status.get(PENDING_FIELD) or [] if p.get("id") != record["id"]]
    status[PENDING_FIELD] = [*pending, record][-PENDING_LIMIT:]


def cloud_event(record: Mapping[str, Any]) -> tuple[dict[str, str], bytes]:
    """The HTTP binary-mode request (headers, body) of a pending record."""
    attributes: dict[str, Any] = {
        "id": record["id"],
        "type": record["type"],
        "source": record["source"],
        "subject": record["subject"],
        "datacontenttype": "application/json",
    }
    when = parse_time(record.get("time"))
    if when is not None:
        attributes["time"] = when
    message = to_binary_event(CloudEvent(attributes, dict(record.get("data") or {})))
    return dict(message.headers), message.body


def shown(url: str) -> str:
    """A URL for messages: scheme, host and path, never userinfo or query (they may hold a token)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}"


def without(pending: Sequence[Mapping[str, Any]], record_id: str, url: str) -> list[dict[str, Any]]:
    """``pending`` with ``url`` done for ``record_id`` (and the record gone once no URL is left)."""
    out: list[dict[str, Any]] = []
    for p in pending:
        item = dict(p)
        if item.get("id") == record_id:
            item["urls"] = [u for u in item.get("urls") or [] if u != url]
            if not item["urls"]:
                continue
        out.append(item)
    return out


def failure_counter(registry: Any) -> Any:
    """``eft_notifications_failed_total{event}`` on the operator's metrics registry."""
    return Counter(
        "eft_notifications_failed",
        "CloudEvents (spec.notify) a receiver did not accept on an attempt, by event; each is retried.",
        ["event"],
        registry=registry,
    )


class Notifier:
    """Sends each resource's pending notifications in a task of its own (one per resource).

    A pass hands the current ``status.pendingNotifications`` to :meth:`follow`; the task sends what it has
    not handled yet, then looks at the latest list it was handed, until nothing new is left."""

    def __init__(self, failures: Any, retry_delays: Sequence[float] = RETRY_DELAYS) -> None:
        self.failures = failures
        self.retry_delays = tuple(retry_delays)
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._latest: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._session: aiohttp.ClientSession | None = None

    def follow(self, key: tuple[str, str], pending: Sequence[Mapping[str, Any]] | None, done: Done, warn: Warn) -> None:
        """Make sure ``pending`` is being sent."""
        if not pending:
            return
        self._latest[key] = [dict(p) for p in pending]
        task = self._tasks.get(key)
        if task is None or task.done():
            self._tasks[key] = asyncio.create_task(self._send_all(key, done, warn), name=f"notify {key}")

    async def _send_all(self, key: tuple[str, str], done: Done, warn: Warn) -> None:
        handled: set[tuple[str, str]] = set()
        while True:
            todo = [
                (r, u) for r in self._latest.get(key, []) for u in r.get("urls") or [] if (r["id"], u) not in handled
            ]
            if not todo:
                return
            handled.update((r["id"], u) for r, u in todo)
            await asyncio.gather(*(self._send(r, u, done, warn) for r, u in todo))

    async def _send(self, record: Mapping[str, Any], url: str, done: Done, warn: Warn) -> None:
        headers, body = cloud_event(record)
        event = str(record["type"]).removeprefix(TYPE_PREFIX)
        attempt = 0
        while True:
            problem = await self._post(url, headers, body)
            if problem is None:
                await done(str(record["id"]), url)
                log.info("Sent CloudEvent %s to %s.", record["id"], shown(url))
                return
            self.failures.labels(event=event).inc()
            if attempt == 0:
                await warn(
                    "NotificationFailed",
                    f"sending CloudEvent {record['id']} to {shown(url)} failed ({problem}); retrying",
                )
            await asyncio.sleep(self.retry_delays[min(attempt, len(self.retry_delays) - 1)])
            attempt += 1

    async def _post(self, url: str, headers: dict[str, str], body: bytes) -> str | None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT))
        try:
            async with self._session.post(url, data=body, headers=headers, allow_redirects=False) as resp:
                return None if 200 <= resp.status < 300 else f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return type(exc).__name__

    def stop(self, key: tuple[str, str]) -> None:
        self._latest.pop(key, None)
        task = self._tasks.pop(key, None)
        if task is not None:
            task.cancel()

    def idle(self, key: tuple[str, str]) -> bool:
        task = self._tasks.get(key)
        return task is None or task.done()

    async def close(self) -> None:
        for key in list(self._tasks):
            self.stop(key)
        if self._session is not None:
            await self._session.close()
            self._session = None
