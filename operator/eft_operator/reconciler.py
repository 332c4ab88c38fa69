"""One reconciliation of one EmbeddingFinetune: read the world, act, write status. Level-based.

Every pass, whatever woke it (the resource appearing or changing, its Job or Pod changing, an operator
restart), reads the resource, its current run's Job and Pods, and derives status from them:

1. The spec is parsed with the shared typed model; an invalid spec gets ``Stalled=True, reason
   InvalidSpec`` naming the field path, and nothing is created (:class:`InvalidSpecError`, not retried).
2. Which run should exist: the current run when it trains this generation or the same run-defining spec
   (a ``runPolicy.suspend`` toggle is not a new run); else a new run for this generation. A run still
   going for an older generation is stopped (its Job deleted) and recorded as ``Superseded``. A finished
   run is never started again: status history is the record (finished Jobs vanish after their TTL).
3. Children are created if absent (deterministic names; on 409 the existing child is read and its owner
   uid checked: a child owned by another object is never adopted, a condition says so).
4. The Job's ``suspend`` follows ``spec.runPolicy.suspend`` (a Kueue-queued Job is left to Kueue to start).
5. Status is computed by :func:`eft_operator.status.compute_status` and patched only when it changed;
   Events are posted for each transition.

Passes for one resource are serialised by an in-memory lock; the controller never writes spec.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

import kopf

from eft_api.contract import output_prefix
from eft_api.spec import EmbeddingFinetuneSpec, InvalidSpec, parse_spec
from eft_operator import children
from eft_operator.config import Settings
from eft_operator.metrics import Metrics
from eft_operator.render import Owner, queue_name, render_children, render_service, spec_hash
from eft_operator.status import (
    CHILD_CONFLICT,
    TERMINAL_PHASES,
    Observation,
    Problem,
    compute_status,
    merge_patch,
    observe,
)

Logger = logging.Logger | logging.LoggerAdapter[Any]


class InvalidSpecError(Exception):
    """The spec does not parse: the condition is written; retrying cannot help."""


class ChildConflictError(Exception):
    """A child name is taken by an object another owner controls: the condition is written."""


#: How a failed pass is counted: (exception type, ``eft_reconciles_total`` result, ``eft_reconcile_errors_total`` kind).
_OUTCOMES: tuple[tuple[type[Exception], str, str], ...] = (
    (InvalidSpecError, "invalid", "invalid_spec"),
    (ChildConflictError, "conflict", "child_conflict"),
    (children.APIError, "error", "api"),
    (Exception, "error", "unexpected"),
)


def utcnow() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Reconciler:
    """Holds what passes share: settings, metrics, per-resource locks."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None, clock: Callable[[], str] = utcnow) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.clock = clock
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def forget(self, namespace: str, name: str) -> None:
        self._locks.pop((namespace, name), None)
        self.metrics.forget(namespace, name)

    async def reconcile(
        self,
        namespace: str,
        name: str,
        *,
        kopf_settings: Any,
        logger: Logger,
        fresh_body: Mapping[str, Any] | None = None,
    ) -> None:
        """One pass for ``namespace/name``; raises what the caller should turn into kopf errors.

        ``fresh_body`` is the object as a creation event delivered it: nothing has written to it yet, so
        the pass need not read it again. Every other pass reads it under the lock, so that it sees the
        status the previous pass wrote.
        """
        lock = self._locks.setdefault((namespace, name), asyncio.Lock())
        started = time.monotonic()
        result = "success"
        try:
            async with lock:
                await self._pass(namespace, name, children.Client(kopf_settings, logger), logger, fresh_body)
        except Exception as exc:
            result, kind = next((r, k) for t, r, k in _OUTCOMES if isinstance(exc, t))
            self.metrics.errors.labels(kind=kind).inc()
            raise
        finally:
            self.metrics.reconciles.labels(result=result).inc()
            self.metrics.duration.observe(time.monotonic() - started)

    async def _pass(
        self,
        namespace: str,
        name: str,
        client: children.Client,
        logger: Logger,
        fresh_body: Mapping[str, Any] | None = None,
    ) -> None:
        body = dict(fresh_body) if fresh_body is not None else await client.get("EmbeddingFinetune", namespace, name)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return
        meta = body["metadata"]
        uid, generation = str(meta.get("uid") or ""), int(meta.get("generation") or 1)
        prev: dict[str, Any] = dict(body.get("status") or {})
        now = self.clock()
        current = dict(prev.get("currentRun") or {})
        active = bool(current) and current.get("phase") not in TERMINAL_PHASES

        try:
            spec = parse_spec(body.get("spec"))
        except InvalidSpec as exc:
            superseded = None
            if active and int(current.get("generation") or 0) < generation:
                await client.delete_job(namespace, str(current.get("jobName")))
                superseded = current
            problem = Problem("InvalidSpec", f"generation {generation} is invalid: {exc}")
            await self._stall(client, body, prev, current, superseded, problem, now, logger)
            raise InvalidSpecError(str(exc)) from None

        owner = Owner.of(namespace, name, uid, generation, spec)
        digest = spec_hash(spec)
        keep = bool(current) and (
            int(current.get("generation") or 0) == generation or current.get("specHash") == digest
        )
        superseded = None
        created = False
        job: dict[str, Any] | None
        if keep:
            run = current
        elif any(int(r.get("generation") or 0) == generation for r in prev.get("runs") or []):
            return  # this generation already ran to the end: history is the record, never run it twice
        else:
            if active:
                await client.delete_job(namespace, str(current.get("jobName")))
                superseded = current
            configmap, job_body = render_children(owner, spec, self.settings)
            try:
                await client.ensure(configmap, uid)
                service = render_service(owner, spec)  # the rendezvous of a multi-node run
                if service is not None:
                    await client.ensure(service, uid)
                job, created = await client.ensure(job_body, uid)
            except children.OwnedByAnother as exc:
                problem = Problem(CHILD_CONFLICT, str(exc))
                await self._stall(client, body, prev, current, superseded, problem, now, logger)
                raise ChildConflictError(str(exc)) from None
            run = {
                "id": owner.run_id,
                "generation": generation,
                "jobName": owner.child_name,
                "specHash": digest,
                "outputUri": render_outputs(owner, spec),
                "startTime": (job.get("metadata") or {}).get("creationTimestamp") or now,
            }
            if created:
                logger.info(f"Created Job {namespace}/{owner.child_name} for generation {generation}.")
            else:
                logger.info(
                    f"Found Job {namespace}/{owner.child_name} of this resource; adopted it as run {owner.run_id}."
                )

        observation: Observation | None = None
        if run.get("phase") not in TERMINAL_PHASES:
            job_name = str(run.get("jobName"))
            if keep:
                job = await client.get("Job", namespace, job_name)
            if job is not None:
                job = await self._follow_suspend(
                    client, job, spec.run_policy.suspend, bool(queue_name(spec, self.settings)), logger
                )
            pods = [] if created or job is None else await client.pods_of_run(namespace, str(run.get("id")))
            observation = observe(job, pods)
        status, events = compute_status(
            prev,
            generation=generation,
            run=run,
            observation=observation,
            superseded=superseded,
            superseded_by=f"generation {generation} changed the spec",
            now=now,
        )
        await self._write(client, body, prev, status, events, logger)

    async def _stall(
        self,
        client: children.Client,
        body: Mapping[str, Any],
        prev: Mapping[str, Any],
        current: Mapping[str, Any],
        superseded: Mapping[str, Any] | None,
        problem: Problem,
        now: str,
        logger: Logger,
    ) -> None:
        """Write the status of a pass that cannot go on (invalid spec, a child name taken by another owner)."""
        generation = int(body["metadata"].get("generation") or 1)
        status, events = compute_status(
            prev,
            generation=generation,
            run=current or None,
            superseded=superseded,
            superseded_by=f"generation {generation} changed the spec",
            problem=problem,
            now=now,
        )
        await self._write(client, body, prev, status, events, logger)

    async def _follow_suspend(
        self, client: children.Client, job: dict[str, Any], suspend: bool, queued: bool, logger: Logger
    ) -> dict[str, Any]:
        finished = any(
            c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
            for c in (job.get("status") or {}).get("conditions") or []
        )
        current = bool((job.get("spec") or {}).get("suspend"))
        if finished or current == suspend or (current and queued):
            return job  # a queued Job is started by Kueue, not by us
        meta = job["metadata"]
        await client.patch("Job", meta["namespace"], meta["name"], {"spec": {"suspend": suspend}})
        logger.info(f"{'Suspended' if suspend else 'Resumed'} Job {meta['namespace']}/{meta['name']}.")
        job = dict(job)
        job["spec"] = {**(job.get("spec") or {}), "suspend": suspend}
        return job

    async def _write(
        self,
        client: children.Client,
        body: Mapping[str, Any],
        prev: Mapping[str, Any],
        status: Mapping[str, Any],
        events: list[Any],
        logger: Logger,
    ) -> None:
        meta = body["metadata"]
        namespace, name = str(meta["namespace"]), str(meta["name"])
        patch = merge_patch(prev, status)
        if patch:
            await client.patch("EmbeddingFinetune", namespace, name, {"status": patch}, subresource="status")
        for event in events:
            kopf.event(cast(Any, body), type=event.type, reason=event.reason, message=event.message)
        self._observe_finished(prev, status)
        self.metrics.observe_status(namespace, name, status)

    def _observe_finished(self, prev: Mapping[str, Any], status: Mapping[str, Any]) -> None:
        before = {r.get("id") for r in prev.get("runs") or []}
        for r in status.get("runs") or []:
            if r.get("id") in before or r.get("phase") == "Superseded":
                continue
            start, end = _parse_time(r.get("startTime")), _parse_time(r.get("completionTime"))
            if start is not None and end is not None and end >= start:
                self.metrics.run_duration.observe((end - start).total_seconds())


def render_outputs(owner: Owner, spec: EmbeddingFinetuneSpec) -> str:
    return output_prefix(spec.output.uri, owner.namespace, owner.name, owner.run_id)


def _parse_time(value: Any) -> datetime.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
