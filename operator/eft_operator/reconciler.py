"""One reconciliation of one EmbeddingFinetune: read the world, act, write status. Level-based.

Every pass, whatever woke it (the resource appearing or changing, its Job or Pod changing, an operator
restart, a recheck timer), reads the resource, its current run's Job and Pods, and derives status from them:

1. The spec is parsed with the shared typed model; an invalid spec gets ``Stalled=True, reason
   InvalidSpec`` naming the field path, and nothing is created (:class:`InvalidSpecError`, not retried).
   A ``spec.image`` outside the operator's allowed images gets ``Stalled=True, reason ImageNotAllowed``; a
   spec the platform policy refuses (:mod:`eft_api.policy`) gets ``reason PolicyViolation`` naming the field
   and the rule. Neither creates anything.
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
import contextlib
import datetime
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import kopf

from eft_api import contract, policy
from eft_api.contract import output_prefix
from eft_api.relevance import training_digest
from eft_api.spec import EmbeddingFinetuneSpec, InvalidSpec, parse_spec
from eft_api.status import CurrentRun, TrainerStatus
from eft_operator import children, notify, triggers
from eft_operator.config import Settings
from eft_operator.metrics import Metrics
from eft_operator.pacing import Pacing, Ticket
from eft_operator.progress import metrics_url
from eft_operator.progress_reader import ProgressReader, Writer
from eft_operator.render import (
    Owner,
    queue_name,
    render_children,
    render_network_policy,
    render_service,
    spec_hash,
)
from eft_operator.status import (
    CHILD_CONFLICT,
    IMAGE_NOT_ALLOWED,
    JOB_CREATED,
    JOB_REJECTED,
    NO_POD_GRACE,
    PENDING,
    POLICY_VIOLATION,
    RECONCILE_FAILED,
    RUNNING,
    TERMINAL_PHASES,
    Observation,
    Problem,
    compute_status,
    merge_patch,
    observe,
    pods_missing,
    reusable,
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
    #: When spec.retrain wants the resource looked at again (its next schedule time or data check), if ever.
    wake_at: datetime.datetime | None = None


@dataclass(frozen=True)
class _PassContext:
    """What one pass read at its start: the resource, its previous status and current run, and the time."""

    body: Mapping[str, Any]
    client: children.Client
    logger: Logger
    now: str
    namespace: str
    name: str
    uid: str
    generation: int
    prev: dict[str, Any]
    current: dict[str, Any]
    #: A creation pass's hold on deferrable work (eft_operator.pacing), or None.
    ticket: Ticket | None = None

    @classmethod
    def of(
        cls, body: Mapping[str, Any], client: children.Client, logger: Logger, now: str, ticket: Ticket | None = None
    ) -> _PassContext:
        meta = body["metadata"]
        prev: dict[str, Any] = dict(body.get("status") or {})
        return cls(
            body=body,
            client=client,
            logger=logger,
            now=now,
            namespace=str(meta["namespace"]),
            name=str(meta["name"]),
            uid=str(meta.get("uid") or ""),
            generation=int(meta.get("generation") or 1),
            prev=prev,
            current=dict(prev.get("currentRun") or {}),
            ticket=ticket,
        )

    @property
    def active(self) -> bool:
        """Whether the current run (from status) is still going."""
        return bool(self.current) and self.current.get("phase") not in TERMINAL_PHASES

    @property
    def superseded_by(self) -> str:
        return f"generation {self.generation} changed the spec"


@dataclass(frozen=True)
class _Start:
    """The run a pass follows: kept from status, or just created (with its Job) in this pass."""

    run: Mapping[str, Any]
    job: dict[str, Any] | None = None
    created: bool = False
    superseded: Mapping[str, Any] | None = None


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
        #: Passes (and progress writes) holding or waiting for each resource's lock: it goes with the last.
        self._users: dict[tuple[str, str], int] = {}
        self._rechecks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._attempts: dict[tuple[str, str], int] = {}
        #: Resources whose pod appeared while their first pass was going (that pass need not look again).
        self._pod_seen: set[tuple[str, str]] = set()
        #: The reason of each resource's current run after its last pass (what a pod appearing can change).
        self._reasons: dict[tuple[str, str], str] = {}
        #: Resources whose last pass failed: the periodic resync (eft_operator.resync) passes them again.
        self.failed: set[tuple[str, str]] = set()
        #: Jobs first under a burst: passes that may create a Job before status writes and rechecks.
        self.pacing = Pacing()
        #: Reads running trainers' gauges into status.trainerStatus (one task per running run).
        self.progress = ProgressReader(settings.progress_interval, self.metrics, clock)
        #: Wakes each resource at its next schedule time or data check (spec.retrain).
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
        self._attempts.pop(key, None)
        self._pod_seen.discard(key)
        self._reasons.pop(key, None)
        self.failed.discard(key)
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
        which looked for the pod, is cancelled instead. Under a burst the pod often appears while the
        pass that created its Job is still going: that pass is told not to schedule the recheck.
        """
        key = (namespace, name)
        reason = self._reasons.get(key)
        if reason is None and key in self._users:
            self._pod_seen.add(key)  # the first pass is in flight: it will know its run has a pod
            return False
        if reason != JOB_CREATED:
            return True
        self._unschedule(key)
        return False

    def tracked(self) -> set[tuple[str, str]]:
        """The resources the reconciler holds any in-memory state for (a lock, a recheck, a reason, a count)."""
        return {*self._locks, *self._rechecks, *self._attempts, *self._reasons, *self._pod_seen}

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
        creating: bool = False,
    ) -> None:
        """One pass for ``namespace/name``; raises what the caller should turn into kopf errors.

        ``fresh_body`` is the object as a creation event delivered it: nothing has written to it yet, so
        the pass need not read it again. Every other pass reads it under the lock, so that it sees the
        status the previous pass wrote. ``child`` is the Job or Pod whose event woke the pass: once its
        run's outcome is recorded (or its resource is gone), the operator's finalizer leaves it.
        ``creating``: a pass that may create a run's Job (kopf's create, resume and update handlers); the
        other passes wait for their turn behind those (eft_operator.pacing).
        """
        key = (namespace, name)
        ticket = self.pacing.ticket() if creating else None
        if ticket is None:
            await self.pacing.turn()
        started = time.monotonic()
        result = "success"
        try:
            async with self._held(key):
                try:
                    outcome = await self._pass(namespace, name, self.client, logger, fresh_body, ticket)
                    if child is not None:
                        await self._release_child(child, outcome.status, logger)
                except Exception as exc:
                    # Recorded under the lock: a pass waiting for it reads the status with the failure in it.
                    result = await self._failed(namespace, name, exc, logger)
                    raise
        finally:
            if ticket is not None:
                ticket.done()
            self.metrics.reconciles.labels(result=result).inc()
            self.metrics.duration.observe(time.monotonic() - started)
        self.failed.discard(key)
        self._after_pass(key, outcome, logger)

    @contextlib.asynccontextmanager
    async def _held(self, key: tuple[str, str]) -> AsyncIterator[None]:
        """The resource's lock, which exists only while someone holds or waits for it (so none outlives a
        resource that is gone, or never was)."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            users = self._users.pop(key) - 1
            if users:
                self._users[key] = users
            else:
                del self._locks[key]

    async def _failed(self, namespace: str, name: str, exc: Exception, logger: Logger) -> str:
        """Count a failed pass and (unless retrying cannot help) say so in status; the reconcile result."""
        if not isinstance(exc, InvalidSpecError):
            self.failed.add((namespace, name))  # the periodic resync retries it
        self._pod_seen.discard((namespace, name))  # the next pass reads the pods itself
        result, kind = next((r, k) for t, r, k in _OUTCOMES if isinstance(exc, t))
        self.metrics.errors.labels(kind=kind).inc()
        if not isinstance(exc, InvalidSpecError | ChildConflictError) and not self._closing:
            await self._report_failure(namespace, name, exc, logger)
        return result

    def _after_pass(self, key: tuple[str, str], outcome: _Result, logger: Logger) -> None:
        """Remember the run's reason, schedule or cancel the recheck, start or stop following progress."""
        current = (outcome.status or {}).get("currentRun") or {}
        if outcome.status is None:
            self._reasons.pop(key, None)
        else:
            self._reasons[key] = str(current.get("reason") or "")
        pod_seen, waiting = key in self._pod_seen, self._reasons.get(key) == JOB_CREATED
        self._pod_seen.discard(key)
        if pod_seen and not waiting and outcome.status is not None:
            self._schedule(key, logger, delay=0.0)  # the pass may have read the pods before this one came
        elif outcome.recheck and outcome.status is not None and not pod_seen:
            self._schedule(key, logger)
        else:
            self._unschedule(key)
        # No await since the lock was released: a progress write waiting for it sees this first.
        if outcome.progress_url is not None and outcome.status is not None:
            previous = outcome.status.get("trainerStatus")
            writer = self._progress_writer(key, outcome.progress_url)
            self.progress.follow(key, outcome.progress_url, previous, writer, logger)
        else:
            self.progress.stop(key)
        self._after_retrain(key, outcome, logger)

    def _after_retrain(self, key: tuple[str, str], outcome: _Result, logger: Logger) -> None:
        """Arm the timer of the next schedule time or data check; send what spec.notify has pending."""
        if outcome.status is None or self._closing:
            return
        if outcome.wake_at is not None:
            self.timers.arm(key, outcome.wake_at, lambda: self._recheck(key, 0.0, logger))
        pending = outcome.status.get(notify.PENDING_FIELD)
        self.notifier.follow(key, pending, self._notified(key), self._notify_warning(key))

    def _notified(self, key: tuple[str, str]) -> notify.Done:
        """Removes a sent notification's URL from status.pendingNotifications, under the resource's lock."""

        async def done(record_id: str, url: str) -> None:
            async with self._held(key):
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

    def _progress_writer(self, key: tuple[str, str], url: str) -> Writer:
        """Patches status.trainerStatus under the resource's lock, while the reader still follows ``url``."""

        async def write(block: dict[str, Any]) -> None:
            async with self._held(key):
                if self.progress.following(key) != url:
                    return  # the run ended or moved to another pod meanwhile
                cleared = dict.fromkeys(TRAINER_STATUS_FIELDS)  # a merge patch removes what the block lacks
                patch = {"status": {"trainerStatus": {**cleared, **block}}}
                await self.client.patch("EmbeddingFinetune", *key, patch, subresource="status")

        return write

    # --- rechecks -----------------------------------------------------------------------------------

    def _schedule(self, key: tuple[str, str], logger: Logger, delay: float | None = None) -> None:
        """Look at the resource again after the next of the growing delays (or after ``delay``)."""
        attempt = self._attempts.get(key, 0)
        self._attempts[key] = attempt + 1
        if delay is None:
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
            if key in self._reasons:  # not forgotten (deleted) in the meantime
                self._schedule(key, logger)

    # --- one pass -----------------------------------------------------------------------------------

    async def _pass(
        self,
        namespace: str,
        name: str,
        client: children.Client,
        logger: Logger,
        fresh_body: Mapping[str, Any] | None = None,
        ticket: Ticket | None = None,
    ) -> _Result:
        body = dict(fresh_body) if fresh_body is not None else await client.get("EmbeddingFinetune", namespace, name)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return _Result(None)
        if self.kopf_settings is not None:  # lines name the resource ([namespace/name]), whoever woke the pass
            logger = kopf.ObjectLogger(body=cast(Any, body), settings=self.kopf_settings)
        ctx = _PassContext.of(body, client, logger, self.clock(), ticket)
        try:
            spec = parse_spec(body.get("spec"))
        except InvalidSpec as exc:
            await self._invalid(ctx, exc)
            raise InvalidSpecError(str(exc)) from None
        digest = spec_hash(spec)
        current = ctx.current
        keep = bool(current) and (
            int(current.get("generation") or 0) == ctx.generation or current.get("specHash") == digest
        )
        retrain = await self._retrain(ctx, spec) if keep else None  # spec.retrain, the annotation, the probe
        retrigger = retrain.start if retrain is not None else None
        owner = Owner.of(
            namespace, name, ctx.uid, ctx.generation, spec, retrigger or triggers.spec_change_trigger(spec, ctx.prev)
        )
        if keep and retrigger is None:
            return await self._follow_run(ctx, spec, _Start(run=current), retrain)
        if retrigger is None and any(
            int(r.get("generation") or 0) == ctx.generation for r in ctx.prev.get("runs") or []
        ):
            return _Result(ctx.prev)  # this generation already ran to the end: history is the record
        superseded = await self._stop(client, namespace, current) if ctx.active else None
        started = await self._start_run(ctx, spec, owner, digest, superseded)
        if isinstance(started, _Result):
            return started
        return await self._follow_run(ctx, spec, started, retrain)

    async def _retrain(self, ctx: _PassContext, spec: EmbeddingFinetuneSpec) -> triggers.PassRetrain:
        """The data probe's news and what the triggers want, in a pass that would keep the current run."""
        block, events = await triggers.refresh_probe(ctx.client, ctx.body, spec, ctx.prev, ctx.now, self.settings)
        decision = triggers.plan(ctx.body, spec, ctx.prev, ctx.now, ctx.active, block)
        return triggers.PassRetrain(decision, events)

    async def _invalid(self, ctx: _PassContext, exc: InvalidSpec) -> None:
        """An invalid spec: a run of an older generation stops; the condition names the field."""
        current = ctx.current
        older = ctx.active and _older(current, ctx.generation)
        superseded = await self._stop(ctx.client, ctx.namespace, current) if older else None
        problem = Problem("InvalidSpec", f"generation {ctx.generation} is invalid: {exc}")
        await self._stall(ctx, superseded, problem)

    async def _start_run(
        self,
        ctx: _PassContext,
        spec: EmbeddingFinetuneSpec,
        owner: Owner,
        digest: str,
        superseded: Mapping[str, Any] | None,
    ) -> _Start | _Result:
        """Create the children of a new run for this generation; a _Result when the pass cannot go on."""
        refusal = self._refusal(spec, ctx.body, ctx.namespace)
        if refusal is not None:
            return _Result(await self._stall(ctx, superseded, refusal))
        tdigest = training_digest(spec)
        # Only evaluation, gate or the like changed: re-gate the trained model. Never for a retrain trigger
        # (schedule, data change, manual): the data under the same URIs may differ, which is why it runs.
        trig = owner.trigger
        regate = trig is None or trig.kind == "specChange"
        data = trig.data_digest if trig is not None else None
        reuse = reusable(ctx.prev.get("runs") or [], tdigest, data) if regate else None
        try:
            job, created = await self._create_children(ctx, owner, spec, reuse)
        except children.OwnedByAnother as exc:
            await self._stall(ctx, superseded, Problem(CHILD_CONFLICT, str(exc)))
            raise ChildConflictError(str(exc)) from None
        except children.APIError as exc:
            if not exc.refused:
                raise
            return _Result(await self._stall(ctx, superseded, _refused(ctx, owner, exc)), recheck=True)
        run = CurrentRun(
            id=owner.run_id,
            generation=ctx.generation,
            job_name=owner.child_name,
            spec_hash=digest,
            training_digest=tdigest,
            reused_model_from=reuse.run_id if reuse else None,
            output_uri=render_outputs(owner, spec),
            start_time=(job.get("metadata") or {}).get("creationTimestamp") or ctx.now,
        ).to_status()
        run = {**run, **triggers.run_fields(owner.trigger, ctx.body, spec)}
        where = f"{ctx.namespace}/{owner.child_name}"
        if created:
            ctx.logger.info(f"Created Job {where} for generation {ctx.generation} of {ctx.namespace}/{ctx.name}.")
        else:
            ctx.logger.info(f"Found Job {where} of {ctx.namespace}/{ctx.name}; adopted it as run {owner.run_id}.")
        return _Start(run=run, job=job, created=created, superseded=superseded)

    async def _create_children(
        self, ctx: _PassContext, owner: Owner, spec: EmbeddingFinetuneSpec, reuse: contract.ModelReuse | None
    ) -> tuple[dict[str, Any], bool]:
        """The run's ConfigMap (naming a trained model to reuse, if any), the Service and NetworkPolicy of a
        multi-node run, then the Job: created if absent."""
        configmap, job_body = render_children(owner, spec, self.settings, reuse)
        await ctx.client.ensure(configmap, ctx.uid)
        # The rendezvous of a multi-node run, and the NetworkPolicy that lets only its own pods in.
        for extra in (render_service(owner, spec), render_network_policy(owner, spec, self.settings)):
            if extra is not None:
                await ctx.client.ensure(extra, ctx.uid)
        return await ctx.client.ensure(job_body, ctx.uid)

    async def _follow_run(
        self,
        ctx: _PassContext,
        spec: EmbeddingFinetuneSpec,
        start: _Start,
        retrain: triggers.PassRetrain | None = None,
    ) -> _Result:
        """Observe the run's Job and Pods, write status and Events, then clean up what the run left behind."""
        run, job, created = start.run, start.job, start.created
        observation: Observation | None = None
        pods: list[dict[str, Any]] = []
        recheck = False
        if run.get("phase") not in TERMINAL_PHASES:
            job, pods, observation, recheck = await self._observe(ctx, spec, start)
        progress_url = metrics_url(pods) if observation is not None and observation.phase == RUNNING else None
        status, events = compute_status(
            ctx.prev,
            generation=ctx.generation,
            run=run,
            observation=observation,
            superseded=start.superseded,
            superseded_by=triggers.superseded_by(retrain, ctx.superseded_by),
            now=ctx.now,
        )
        notify.enqueue(ctx.prev, status, spec, ctx.body)  # spec.notify: in the same write as the outcome
        events += triggers.fold(status, retrain, start.job is not None, ctx.body, spec, ctx.now)
        if ctx.ticket is not None:  # the Job exists: the status write waits behind other resources' creations
            ctx.ticket.done()
            await self.pacing.turn()
        await self._write(ctx.client, ctx.body, ctx.prev, status, events, ctx.logger)
        current = ctx.current
        if start.superseded is not None:
            await self._clean_up(ctx.client, ctx.namespace, start.superseded, ctx.logger)
        elif created and current and not ctx.active and current.get("jobName") != run.get("jobName"):
            # A new run follows a finished one: the old run config is history (status has its record).
            await self._delete_configmap(ctx.client, ctx.namespace, current, ctx.logger)
        finished = (status.get("currentRun") or {}).get("phase") in TERMINAL_PHASES
        if finished and observation is not None:
            await self._release_run(ctx, str(run.get("id")), job, pods)
        return _Result(status, recheck, progress_url, triggers.wake_at(retrain, spec, ctx.prev, ctx.now))

    async def _observe(
        self, ctx: _PassContext, spec: EmbeddingFinetuneSpec, start: _Start
    ) -> tuple[dict[str, Any] | None, list[dict[str, Any]], Observation, bool]:
        """The unfinished run's Job (its suspend following the spec), its Pods, what they say, whether to recheck."""
        client, job, created = ctx.client, start.job, start.created
        if start.job is None:  # a run this pass did not create: read its Job
            job = await client.get("Job", ctx.namespace, str(start.run.get("jobName")))
        if job is not None:
            queued = bool(queue_name(spec, self.settings))
            job = await self._follow_suspend(client, job, spec.run_policy.suspend, queued, ctx.logger)
        run_id = str(start.run.get("id"))
        pods = [] if created or job is None else await client.pods_of_run(ctx.namespace, run_id, job)
        observation = observe(job, pods)
        recheck = False
        if job is not None and observation.phase == PENDING and observation.reason == JOB_CREATED:
            observation, recheck = await self._without_pods(client, job, pods, created, observation)
        return job, pods, observation, recheck

    async def _release_run(
        self, ctx: _PassContext, run_id: str, job: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]
    ) -> None:
        """A finished run's outcome is in status: its Job and Pods lose the operator's finalizer."""
        for obj in ([job] if job is not None else []) + list(pods):
            await ctx.client.release(obj)
        if job is None:  # the Job is gone: its pods may still hold the finalizer
            for pod in await ctx.client.pods_of_run(ctx.namespace, run_id):
                await ctx.client.release(pod)

    def _refusal(self, spec: EmbeddingFinetuneSpec, body: Mapping[str, Any], namespace: str) -> Problem | None:
        """Why the platform refuses to run ``spec`` (an image it does not allow, its policy), or None."""
        if spec.image and not self.settings.image_allowed(spec.image):
            allowed = ", ".join(self.settings.image_prefixes)
            return Problem(
                IMAGE_NOT_ALLOWED,
                f"spec.image {spec.image!r} is not among the trainer images this operator allows ({allowed}): "
                "use one of them, or unset spec.image to use the default trainer image",
            )
        refusal = policy.first_violation(body, self.settings.platform_policy.for_namespace(namespace))
        return None if refusal is None else Problem(POLICY_VIOLATION, str(refusal))

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

    async def _stall(self, ctx: _PassContext, superseded: Mapping[str, Any] | None, problem: Problem) -> dict[str, Any]:
        """Write the status of a pass that cannot go on (invalid spec, image not allowed, a child refused or taken)."""
        status, events = compute_status(
            ctx.prev,
            generation=ctx.generation,
            run=ctx.current or None,
            superseded=superseded,
            superseded_by=ctx.superseded_by,
            problem=problem,
            now=ctx.now,
        )
        await self._write(ctx.client, ctx.body, ctx.prev, status, events, ctx.logger)
        if superseded is not None:
            await self._clean_up(ctx.client, ctx.namespace, superseded, ctx.logger)
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


def _refused(ctx: _PassContext, owner: Owner, exc: children.APIError) -> Problem:
    """The API server refused a child (validation, admission, quota): a condition with its message."""
    kind = "ConfigMap" if exc.path.endswith("/configmaps") else "Job"
    where = f"{ctx.namespace}/{owner.child_name}"
    ctx.logger.warning(f"The API server refused {kind} {where}: {exc.message}")
    return Problem(JOB_REJECTED, f"the API server refused to create {kind} {where} ({exc.status}): {exc.message}")


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
