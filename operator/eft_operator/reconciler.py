"""One reconciliation of one EmbeddingFinetune: read the world, act, write status. Level-based.

Every pass, whatever woke it (the resource appearing or changing, its Job or Pod changing, an operator
restart, a recheck timer), reads the resource, its current run's Job and Pods, and derives status from them:

1. The spec is parsed with the shared typed model; an invalid spec gets ``Stalled=True, reason
   InvalidSpec`` naming the field path, and nothing is created (:class:`InvalidSpecError`, not retried).
   A ``spec.image`` outside the operator's allowed images gets ``Stalled=True, reason ImageNotAllowed``.
2. Which run should exist: the current run when it trains this generation or the same run-defining spec
   (a ``runPolicy.suspend`` toggle is not a new run); else a new run for this generation. A run still
   going for an older generation is stopped (its Job deleted, its ConfigMap too) and recorded as
   ``Superseded``. A finished run is never started again: status history is the record.
3. Children are created if absent (deterministic names; on 409 the existing child is read and its owner
   uid checked: a child owned by another object is never adopted, a condition says so). A child the API
   refuses (validation, admission policy, quota) gives ``Stalled=True, reason JobRejected`` with the API's
   message at once, and the pass is tried again on a timer with backoff, so it clears by itself when the
   cause goes away.
4. The Job's ``suspend`` follows ``spec.runPolicy.suspend`` (a Kueue-queued Job is left to Kueue to start).
   A started Job without pods is looked at again on the timer: the Job controller's ``FailedCreate``
   Events (quota, LimitRange, a missing PriorityClass) give ``Stalled=True, reason PodCreationRefused``.
5. Status is computed by :func:`eft_operator.status.compute_status` and patched only when it changed;
   Events are posted for each transition. Once a run's outcome is in status, the operator's finalizer
   leaves its Job and Pods (it keeps them, and the trainer's termination message, until then).

Passes for one resource are serialised by an in-memory lock; the controller never writes spec.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import kopf

from eft_api import contract
from eft_api.contract import output_prefix
from eft_api.retrain import RunTrigger
from eft_api.spec import EmbeddingFinetuneSpec, InvalidSpec, parse_spec
from eft_api.status import TrainerStatus
from eft_operator import children, notify, triggers
from eft_operator.config import Settings
from eft_operator.metrics import Metrics
from eft_operator.progress import metrics_url
from eft_operator.progress_reader import ProgressReader, Writer
from eft_operator.render import Owner, queue_name, render_children, render_service, spec_hash
from eft_operator.status import (
    CHILD_CONFLICT,
    IMAGE_NOT_ALLOWED,
    JOB_CREATED,
    JOB_REJECTED,
    NO_POD_GRACE,
    PENDING,
    RECONCILE_FAILED,
    RUNNING,
    TERMINAL_PHASES,
    Observation,
    Problem,
    compute_status,
    merge_patch,
    observe,
    pods_missing,
    set_condition,
)

Logger = logging.Logger | logging.LoggerAdapter[Any]
#: The fields of status.trainerStatus (eft_api.status.TrainerStatus), as they appear in the resource.
TRAINER_STATUS_FIELDS = tuple(f.alias or n for n, f in TrainerStatus.model_fields.items())
#: Seconds before each recheck of a resource that waits on something outside it (a refused Job, a Job
#: without pods): the delays grow, then stay at the last one until the cause goes away.
RECHECK_DELAYS = (5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0)


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


@dataclass
class _Result:
    """What a pass ended with: the status it left (None: the resource is gone) and whether to look again."""

    status: Mapping[str, Any] | None
    recheck: bool = False
    #: Where the running trainer serves its gauges (None: no trainer is running).
    progress_url: str | None = None
    #: When spec.retrain wants the resource looked at again (its next schedule time), if ever.
    wake_at: datetime.datetime | None = None


class Reconciler:
    """Holds what passes share: settings, the API client, metrics, per-resource locks and recheck timers."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics | None = None,
        clock: Callable[[], str] = utcnow,
        *,
        recheck_delays: Sequence[float] = RECHECK_DELAYS,
        no_pod_grace: float = NO_POD_GRACE,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.recheck_delays = tuple(recheck_delays)
        self.no_pod_grace = no_pod_grace
        self._client: children.Client | None = None
        #: kopf's settings (set at start-up): a pass woken by a Job or Pod logs as its resource with them.
        self.kopf_settings: Any = None
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._rechecks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._attempts: dict[tuple[str, str], int] = {}
        #: The reason of each resource's current run after its last pass (what a pod appearing can change).
        self._reasons: dict[tuple[str, str], str] = {}
        #: Reads running trainers' gauges into status.trainerStatus (one task per running run).
        self.progress = ProgressReader(settings.progress_interval, self.metrics, clock)
        #: Wakes each resource at its next schedule time (spec.retrain).
        self.timers = triggers.Timers(lambda: triggers.clock_of(self.clock()))
        #: Sends status.pendingNotifications (spec.notify) as CloudEvents, apart from the passes.
        self.notifier = notify.Notifier(notify.failure_counter(self.metrics.registry))
        self._closing = False

    @property
    def client(self) -> children.Client:
        if self._client is None:
            raise RuntimeError("the reconciler is not connected to an API server (call connect() first)")
        return self._client

    def connect(self, client: children.Client) -> None:
        self._client = client

    async def close(self) -> None:
        self._closing = True  # passes still in flight at shutdown fail quietly: the next start redoes them
        for task in self._rechecks.values():
            task.cancel()
        self._rechecks.clear()
        self.timers.close()
        await self.notifier.close()
        await self.progress.close()
        if self._client is not None:
            await self._client.close()
            self._client = None

    def forget(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        self._locks.pop(key, None)
        self._attempts.pop(key, None)
        self._reasons.pop(key, None)
        task = self._rechecks.pop(key, None)
        if task is not None:
            task.cancel()
        self.progress.stop(key)
        self.timers.cancel(key)
        self.notifier.stop(key)
        self.metrics.forget(namespace, name)

    def pod_appeared(self, namespace: str, name: str) -> bool:
        """A pod of the resource appeared (with nothing to say yet): whether a pass is needed.

        Only when the resource shows that its pods cannot be created (the pass clears it), or when
        nothing is known of it yet. A run merely waiting for its first pod needs no pass: its recheck,
        which looked for the pod, is cancelled instead.
        """
        key = (namespace, name)
        reason = self._reasons.get(key)
        if reason != JOB_CREATED:
            return True
        self._unschedule(key)
        return False

    def rechecking(self, namespace: str, name: str) -> bool:
        """Whether a recheck of the resource is scheduled (for tests and the benchmark)."""
        return (namespace, name) in self._rechecks

    async def reconcile(
        self,
        namespace: str,
        name: str,
        *,
        logger: Logger,
        fresh_body: Mapping[str, Any] | None = None,
        child: Mapping[str, Any] | None = None,
    ) -> None:
        """One pass for ``namespace/name``; raises what the caller should turn into kopf errors.

        ``fresh_body`` is the object as a creation event delivered it: nothing has written to it yet, so
        the pass need not read it again. Every other pass reads it under the lock, so that it sees the
        status the previous pass wrote. ``child`` is the Job or Pod whose event woke the pass: once its
        run's outcome is recorded (or its resource is gone), the operator's finalizer leaves it.
        """
        key = (namespace, name)
        lock = self._locks.setdefault(key, asyncio.Lock())
        started = time.monotonic()
        result = "success"
        try:
            async with lock:
                outcome = await self._pass(namespace, name, self.client, logger, fresh_body)
                if child is not None:
                    await self._release_child(child, outcome.status, logger)
        except Exception as exc:
            result, kind = next((r, k) for t, r, k in _OUTCOMES if isinstance(exc, t))
            self.metrics.errors.labels(kind=kind).inc()
            if not isinstance(exc, InvalidSpecError | ChildConflictError) and not self._closing:
                await self._report_failure(namespace, name, exc, logger)
            raise
        finally:
            self.metrics.reconciles.labels(result=result).inc()
            self.metrics.duration.observe(time.monotonic() - started)
        current = (outcome.status or {}).get("currentRun") or {}
        if outcome.status is None:
            self._reasons.pop(key, None)
        else:
            self._reasons[key] = str(current.get("reason") or "")
        if outcome.recheck and outcome.status is not None:
            self._schedule(key, logger)
        else:
            self._unschedule(key)
        if outcome.wake_at is not None and outcome.status is not None and not self._closing:
            self.timers.arm(key, outcome.wake_at, lambda: self._wake(key, logger))
        if outcome.status is not None and not self._closing:
            pending = outcome.status.get(notify.PENDING_FIELD)
            self.notifier.follow(key, pending, self._notified(key), self._notify_warning(key))
        # No await since the lock was released: a progress write waiting for it sees this first.
        if outcome.progress_url is not None and outcome.status is not None:
            previous = outcome.status.get("trainerStatus")
            writer = self._progress_writer(key, outcome.progress_url)
            self.progress.follow(key, outcome.progress_url, previous, writer, logger)
        else:
            self.progress.stop(key)

    def _progress_writer(self, key: tuple[str, str], url: str) -> Writer:
        """Patches status.trainerStatus under the resource's lock, while the reader still follows ``url``."""

        async def write(block: dict[str, Any]) -> None:
            async with self._locks.setdefault(key, asyncio.Lock()):
                if self.progress.following(key) != url:
                    return  # the run ended or moved to another pod meanwhile
                cleared = dict.fromkeys(TRAINER_STATUS_FIELDS)  # a merge patch removes what the block lacks
                patch = {"status": {"trainerStatus": {**cleared, **block}}}
                await self.client.patch("EmbeddingFinetune", *key, patch, subresource="status")

        return write

    # --- rechecks -----------------------------------------------------------------------------------

    def _schedule(self, key: tuple[str, str], logger: Logger) -> None:
        attempt = self._attempts.get(key, 0)
        self._attempts[key] = attempt + 1
        delay = self.recheck_delays[min(attempt, len(self.recheck_delays) - 1)]
        old = self._rechecks.pop(key, None)
        if old is not None and old is not asyncio.current_task():
            old.cancel()
        self._rechecks[key] = asyncio.create_task(self._recheck(key, delay, logger), name=f"recheck {key}")

    def _unschedule(self, key: tuple[str, str]) -> None:
        self._attempts.pop(key, None)
        task = self._rechecks.pop(key, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def _notified(self, key: tuple[str, str]) -> notify.Done:
        """Removes a sent notification's URL from status.pendingNotifications, under the resource's lock."""

        async def done(record_id: str, url: str) -> None:
            async with self._locks.setdefault(key, asyncio.Lock()):
                body = await self.client.get("EmbeddingFinetune", *key)
                pending = ((body or {}).get("status") or {}).get(notify.PENDING_FIELD) or []
                left = notify.without(pending, record_id, url)
                if body is not None and left != pending:
                    patch = {"status": {notify.PENDING_FIELD: left or None}}
                    await self.client.patch("EmbeddingFinetune", *key, patch, subresource="status")

        return done

    def _notify_warning(self, key: tuple[str, str]) -> notify.Warn:
        async def warn(reason: str, message: str) -> None:
            body = await self.client.get("EmbeddingFinetune", *key)
            if body is not None:
                kopf.event(cast(Any, body), type="Warning", reason=reason, message=message[:1024])

        return warn

    async def _wake(self, key: tuple[str, str], logger: Logger) -> None:
        """A schedule time came (spec.retrain): one pass, which decides whether a run starts."""
        await self._recheck(key, 0.0, logger)

    async def _recheck(self, key: tuple[str, str], delay: float, logger: Logger) -> None:
        await asyncio.sleep(delay)
        if self._rechecks.get(key) is asyncio.current_task():
            del self._rechecks[key]
        try:
            await self.reconcile(*key, logger=logger)
        except (InvalidSpecError, ChildConflictError):
            pass  # the condition says so; a spec change starts a pass of its own
        except Exception as exc:
            if self._closing:
                return
            logger.warning(f"Rechecking {key[0]}/{key[1]} failed ({exc}); trying again later.")
            if key in self._locks:  # not forgotten (deleted) in the meantime
                self._schedule(key, logger)

    # --- one pass -----------------------------------------------------------------------------------

    async def _pass(
        self,
        namespace: str,
        name: str,
        client: children.Client,
        logger: Logger,
        fresh_body: Mapping[str, Any] | None = None,
    ) -> _Result:
        body = dict(fresh_body) if fresh_body is not None else await client.get("EmbeddingFinetune", namespace, name)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return _Result(None)
        if self.kopf_settings is not None:  # lines name the resource ([namespace/name]), whoever woke the pass
            logger = kopf.ObjectLogger(body=cast(Any, body), settings=self.kopf_settings)
        meta = body["metadata"]
        uid, generation = str(meta.get("uid") or ""), int(meta.get("generation") or 1)
        prev: dict[str, Any] = dict(body.get("status") or {})
        now = self.clock()
        current = dict(prev.get("currentRun") or {})
        active = bool(current) and current.get("phase") not in TERMINAL_PHASES

        try:
            spec = parse_spec(body.get("spec"))
        except InvalidSpec as exc:
            superseded = (
                await self._stop(client, namespace, current) if active and _older(current, generation) else None
            )
            problem = Problem("InvalidSpec", f"generation {generation} is invalid: {exc}")
            await self._stall(client, body, prev, current, superseded, problem, now, logger)
            raise InvalidSpecError(str(exc)) from None

        digest = spec_hash(spec)
        keep = bool(current) and (
            int(current.get("generation") or 0) == generation or current.get("specHash") == digest
        )
        block, probe_events = (
            await triggers.refresh_probe(client, body, spec, prev, now, self.settings) if keep else (None, [])
        )
        decision = triggers.plan(body, spec, prev, now, active, block) if keep else None  # spec.retrain, annotation
        retrigger = decision.start if decision is not None else None
        keep = keep and retrigger is None
        owner = Owner.of(namespace, name, uid, generation, spec, retrigger or triggers.spec_change_trigger(spec, prev))
        superseded = None
        created = False
        job: dict[str, Any] | None = None
        if keep:
            run = current
        elif retrigger is None and any(int(r.get("generation") or 0) == generation for r in prev.get("runs") or []):
            return _Result(prev)  # this generation already ran to the end: history is the record
        else:
            superseded = await self._stop(client, namespace, current) if active else None
            if spec.image and not self.settings.image_allowed(spec.image):
                allowed = ", ".join(self.settings.image_prefixes)
                problem = Problem(
                    IMAGE_NOT_ALLOWED,
                    f"spec.image {spec.image!r} is not among the trainer images this operator allows ({allowed}): "
                    "use one of them, or unset spec.image to use the default trainer image",
                )
                status = await self._stall(client, body, prev, current, superseded, problem, now, logger)
                return _Result(status)
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
            except children.APIError as exc:
                if not exc.refused:
                    raise
                kind = "ConfigMap" if exc.path.endswith("/configmaps") else "Job"
                problem = Problem(
                    JOB_REJECTED,
                    f"the API server refused to create {kind} {namespace}/{owner.child_name} ({exc.status}): "
                    f"{exc.message}",
                )
                logger.warning(f"The API server refused {kind} {namespace}/{owner.child_name}: {exc.message}")
                status = await self._stall(client, body, prev, current, superseded, problem, now, logger)
                return _Result(status, recheck=True)
            run = {
                "id": owner.run_id,
                "generation": generation,
                "jobName": owner.child_name,
                "specHash": digest,
                "outputUri": render_outputs(owner, spec),
                "startTime": (job.get("metadata") or {}).get("creationTimestamp") or now,
                **triggers.run_fields(owner.trigger, body, spec),
            }
            if created:
                logger.info(
                    f"Created Job {namespace}/{owner.child_name} for generation {generation} of {namespace}/{name}."
                )
            else:
                logger.info(
                    f"Found Job {namespace}/{owner.child_name} of {namespace}/{name}; adopted it as run {owner.run_id}."
                )

        observation: Observation | None = None
        pods: list[dict[str, Any]] = []
        recheck = False
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
            if job is not None and observation.phase == PENDING and observation.reason == JOB_CREATED:
                observation, recheck = await self._without_pods(client, job, pods, created, observation)
        progress_url = metrics_url(pods) if observation is not None and observation.phase == RUNNING else None
        status, events = compute_status(
            prev,
            generation=generation,
            run=run,
            observation=observation,
            superseded=superseded,
            superseded_by=triggers.superseded_by(retrigger, generation),
            now=now,
        )
        notify.enqueue(prev, status, spec, body)  # spec.notify: in the same write as the outcome
        events += probe_events
        events += triggers.fold_status(
            status, decision, None if keep else owner.trigger or RunTrigger(), body, spec, now
        )
        await self._write(client, body, prev, status, events, logger)
        if superseded is not None:
            await self._clean_up(client, namespace, superseded, logger)
        elif created and current and not active and current.get("jobName") != run.get("jobName"):
            # A new run follows a finished one: the old run config is history (status has its record).
            await self._delete_configmap(client, namespace, current, logger)
        finished = (status.get("currentRun") or {}).get("phase") in TERMINAL_PHASES
        if finished and observation is not None:
            for obj in ([job] if job is not None else []) + pods:
                await client.release(obj)
            if job is None:  # the Job is gone: its pods may still hold the finalizer
                for pod in await client.pods_of_run(namespace, str(run.get("id"))):
                    await client.release(pod)
        return _Result(status, recheck, progress_url, triggers.wake_at(decision))

    async def _without_pods(
        self,
        client: children.Client,
        job: Mapping[str, Any],
        pods: list[dict[str, Any]],
        created: bool,
        observation: Observation,
    ) -> tuple[Observation, bool]:
        """A started Job without pods: say why (the Job controller's FailedCreate Events), look again later."""
        if pods or (job.get("spec") or {}).get("suspend"):
            return observation, False
        if created:
            return observation, True
        meta = job.get("metadata") or {}
        events = await client.events_of(str(meta["namespace"]), "Job", str(meta["name"]), str(meta.get("uid") or ""))
        since = _parse_time((job.get("status") or {}).get("startTime") or meta.get("creationTimestamp"))
        age = (datetime.datetime.now(datetime.UTC) - since).total_seconds() if since else 0.0
        missing = pods_missing(job, pods, events, age, self.no_pod_grace)
        return (missing or observation), True

    async def _stop(self, client: children.Client, namespace: str, run: Mapping[str, Any]) -> Mapping[str, Any]:
        """Stop a run of an older generation: delete its Job (its pods go with it). Returns the run."""
        await client.delete_job(namespace, str(run.get("jobName")))
        return run

    async def _clean_up(self, client: children.Client, namespace: str, run: Mapping[str, Any], logger: Logger) -> None:
        """After a stopped run is recorded: its Job, Pods and ConfigMap go (the finalizer leaves them)."""
        job_name = str(run.get("jobName"))
        job = await client.get("Job", namespace, job_name)
        if job is not None:
            await client.release(job)
        for pod in await client.pods_of_run(namespace, str(run.get("id"))):
            await client.release(pod)
        await self._delete_configmap(client, namespace, run, logger)

    async def _delete_configmap(
        self, client: children.Client, namespace: str, run: Mapping[str, Any], logger: Logger
    ) -> None:
        name = str(run.get("jobName"))
        if await client.delete("ConfigMap", namespace, name):
            logger.info(f"Deleted ConfigMap {namespace}/{name} of the earlier run {run.get('id')}.")

    async def _release_child(self, child: Mapping[str, Any], status: Mapping[str, Any] | None, logger: Logger) -> None:
        """Let a Job or Pod go once its run's outcome is in status, or its run is not current, or its resource is gone."""
        if not children.has_finalizer(child):
            return
        meta = child.get("metadata") or {}
        rid = (meta.get("labels") or {}).get(contract.LABEL_RUN)
        current = dict((status or {}).get("currentRun") or {})
        done = status is None or current.get("id") != rid or current.get("phase") in TERMINAL_PHASES
        if done and await self.client.release(child):
            logger.debug(f"Released {meta.get('namespace')}/{meta.get('name')}: its run's outcome is recorded.")

    async def _report_failure(self, namespace: str, name: str, exc: Exception, logger: Logger) -> None:
        """A pass failed: say so in a condition and a Warning Event (best effort: the API may be what failed)."""
        if isinstance(exc, children.APIError) and exc.transient:
            ctype, cstatus = "Reconciling", "True"
            message = f"the API server failed a request ({exc}); retrying"
        else:
            ctype, cstatus = "Stalled", "True"
            message = f"the operator failed to reconcile the resource: {type(exc).__name__}: {exc}"
        unexpected = not isinstance(exc, children.APIError)
        logger.error(f"Reconciling {namespace}/{name} failed: {message}", exc_info=exc if unexpected else None)
        try:
            body = await self.client.get("EmbeddingFinetune", namespace, name)
            if body is None:
                return
            prev = dict(body.get("status") or {})
            generation = int(body["metadata"].get("generation") or 1)
            before = prev.get("conditions") or []
            conds = set_condition(before, ctype, cstatus, RECONCILE_FAILED, message, generation, self.clock())
            if conds == before:
                return
            await self.client.patch(
                "EmbeddingFinetune", namespace, name, {"status": {"conditions": conds}}, subresource="status"
            )
            kopf.event(cast(Any, body), type="Warning", reason=RECONCILE_FAILED, message=message[:1024])
        except Exception as again:  # the API is what failed: kopf's retry will try the pass again
            logger.debug(f"Could not record the failure of {namespace}/{name}: {again!r}")

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
    ) -> dict[str, Any]:
        """Write the status of a pass that cannot go on (invalid spec, image not allowed, a child refused or taken)."""
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
        if superseded is not None:
            await self._clean_up(client, body["metadata"]["namespace"], superseded, logger)
        return status

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


def _older(run: Mapping[str, Any], generation: int) -> bool:
    return int(run.get("generation") or 0) < generation


def render_outputs(owner: Owner, spec: EmbeddingFinetuneSpec) -> str:
    return output_prefix(spec.output.uri, owner.namespace, owner.name, owner.run_id)


def _parse_time(value: Any) -> datetime.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
