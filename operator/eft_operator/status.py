"""Pure status computation: from what the world shows (Job, Pods, termination message) to status and Events.

* :func:`observe` reads a run's Job and its Pods and says what phase the run is in and why.
* :func:`compute_status` folds an observation into the resource's previous status: ``observedGeneration``,
  the ``Ready`` / ``Reconciling`` / ``Stalled`` conditions (kstatus), ``currentRun``, the bounded ``runs``
  history (the record of finished runs: Jobs vanish after their TTL), ``results`` and ``artifacts``, and
  the Events for each transition. Nothing changes, timestamps included, when nothing happened.
* :func:`merge_patch` turns old and new status into a JSON merge patch (``None`` removes a key).

No I/O; ``now`` is passed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eft_api import contract
from eft_api.status import Condition, CurrentRun, Results, RunRecord
from eft_operator import progress

HISTORY_LIMIT = 10
MESSAGE_LIMIT = 1024

PENDING, QUEUED, RUNNING, SUSPENDED = "Pending", "Queued", "Running", "Suspended"
SUCCEEDED, FAILED, SUPERSEDED = "Succeeded", "Failed", "Superseded"
TERMINAL_PHASES = frozenset({SUCCEEDED, FAILED, SUPERSEDED})
PHASES = (PENDING, QUEUED, RUNNING, SUSPENDED, SUCCEEDED, FAILED, SUPERSEDED)

# Reasons the operator sets itself (the trainer's come from contract.Reason).
JOB_CREATED = "JobCreated"
SECRET_NOT_FOUND = "SecretNotFound"
IMAGE_PULL_FAILED = "ImagePullFailed"
DEADLINE_EXCEEDED = "DeadlineExceeded"
BACKOFF_LIMIT_EXCEEDED = "BackoffLimitExceeded"
JOB_DELETED = "JobDeleted"
CHILD_CONFLICT = "ChildNameConflict"
JOB_FAILED = "JobFailed"
JOB_REJECTED = "JobRejected"
POD_CREATION_REFUSED = "PodCreationRefused"
IMAGE_NOT_ALLOWED = "ImageNotAllowed"
POLICY_VIOLATION = "PolicyViolation"
UNSCHEDULABLE = "Unschedulable"
RECONCILE_FAILED = "ReconcileFailed"
#: Pending reasons that will not pass without a person acting (Stalled=True while they last).
BLOCKING_REASONS = frozenset({SECRET_NOT_FOUND, IMAGE_PULL_FAILED, POD_CREATION_REFUSED})
#: Pending reasons worth a Warning Event when they start, blocking or not (a node may still be added).
NOTICE_REASONS = BLOCKING_REASONS | {UNSCHEDULABLE}
#: Seconds a started Job may go without any pod before the run says so (without a FailedCreate Event).
NO_POD_GRACE = 60.0
_EXIT_CODE_REASONS: dict[int, str] = {
    int(contract.ExitCode.BAD_INPUT): contract.BAD_INPUT_REASON,
    int(contract.ExitCode.PROMOTION_REJECTED): contract.Reason.PROMOTION_REJECTED.value,
    int(contract.ExitCode.OUT_OF_MEMORY): contract.Reason.OOM.value,
    int(contract.ExitCode.OUT_OF_MEMORY_FALLBACK): contract.Reason.OOM.value,
}


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the resource."""

    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Observation:
    """What a run's Job and Pods say: the phase, why, and (when finished) the trainer's summary."""

    phase: str
    reason: str
    message: str = ""
    termination: contract.TerminationMessage | None = None
    completion_time: str | None = None


@dataclass(frozen=True)
class Problem:
    """Something that stops the resource before any run: an invalid spec, a child name taken by another owner."""

    reason: str
    message: str


def _clip(text: str) -> str:
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 12] + " [truncated]"


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _trainer_status(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    for cs in _get(pod, "status", "containerStatuses") or []:
        if cs.get("name") == contract.TRAINER_CONTAINER:
            return dict(cs)
    return {}


def _newest_first(pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    def key(p: Mapping[str, Any]) -> tuple[str, str]:
        return (_get(p, "metadata", "creationTimestamp") or "", _get(p, "metadata", "name") or "")

    return sorted(pods, key=key, reverse=True)


def _terminations(pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The trainer container's terminated states, newest pod first (current state before last state)."""
    out = []
    for pod in _newest_first(pods):
        cs = _trainer_status(pod)
        for state in ("state", "lastState"):
            t = _get(cs, state, "terminated")
            if isinstance(t, Mapping):
                out.append(t)
                break
    return out


COMPLETION_INDEX = contract.COMPLETION_INDEX_LABEL


def _latest_terminations(pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The newest terminated state of each completion index (one for a single-node Job), newest first.

    A multi-node attempt fails on every node at once: one rank's own verdict (rank 0 writes the
    termination message; another node may be OOMKilled) sits beside peers that only lost their peer."""
    seen: set[str] = set()
    out = []
    for pod in _newest_first(pods):
        meta = pod.get("metadata") or {}
        index = str(
            (meta.get("annotations") or {}).get(COMPLETION_INDEX, (meta.get("labels") or {}).get(COMPLETION_INDEX, ""))
        )
        if index in seen:
            continue
        terminated = _terminations([pod])
        if terminated:
            seen.add(index)
            out.extend(terminated)
    return out


def headline_text(h: contract.Headline) -> str:
    """``ndcg@10 0.531 -> 0.590 (+0.059) at 384 dims``."""
    return f"{h.primary_metric} {h.base:.3f} -> {h.finetuned:.3f} ({h.gain:+.3f}) at {h.dimension} dims"


def _job_condition(job: Mapping[str, Any], *types: str) -> Mapping[str, Any] | None:
    for c in _get(job, "status", "conditions") or []:
        if c.get("type") in types and c.get("status") == "True":
            return dict(c)
    return None


def observe(job: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]) -> Observation:
    """The phase of a run from its Job and the Job's Pods (``job`` None: the Job is gone).

    A Job being deleted (``deletionTimestamp``; the operator's finalizer keeps it) still tells its
    outcome when it finished; otherwise the run lost its Job.
    """
    deleted = Observation(FAILED, JOB_DELETED, "the run's Job was deleted before the run finished")
    if job is None:
        return deleted
    done = _job_condition(job, "Complete", "SuccessCriteriaMet")
    if done is not None:
        term = next(
            (
                m
                for t in _terminations(pods)
                if (m := contract.TerminationMessage.parse(t.get("message"))) and m.outcome == "Succeeded"
            ),
            None,
        )
        msg = headline_text(term.headline) if term and term.headline else "the trainer finished"
        return Observation(SUCCEEDED, SUCCEEDED, msg, term, _get(job, "status", "completionTime"))
    failed = _job_condition(job, "Failed", "FailureTarget")
    if failed is not None:
        return _failure(job, failed, pods)
    if _get(job, "metadata", "deletionTimestamp"):
        return deleted
    if _get(job, "spec", "suspend"):
        queue = (_get(job, "metadata", "labels") or {}).get(contract.KUEUE_QUEUE_LABEL)
        if queue:
            return Observation(QUEUED, "Queued", f"waiting for Kueue to admit the Job in queue {queue}")
        return Observation(SUSPENDED, "Suspended", "the Job is suspended (spec.runPolicy.suspend is true)")
    for pod in _newest_first(pods):
        cs = _trainer_status(pod)
        waiting = _get(cs, "state", "waiting") or {}
        wreason, wmsg = str(waiting.get("reason") or ""), str(waiting.get("message") or "")
        if wreason == "CreateContainerConfigError" and "secret" in wmsg.lower():
            return Observation(PENDING, SECRET_NOT_FOUND, f"{wmsg}: create it in the resource's namespace")
        if wreason in ("ErrImagePull", "ImagePullBackOff", "InvalidImageName"):
            return Observation(PENDING, IMAGE_PULL_FAILED, wmsg or wreason)
        if _get(cs, "state", "running") is not None:
            name = _get(pod, "metadata", "name")
            return Observation(RUNNING, "Running", f"the trainer is running in pod {name}{_after_oom(pods)}")
        unschedulable = _unschedulable(pod)
        if unschedulable is not None:
            return unschedulable
        break
    if (_get(job, "status", "ready") or 0) > 0:
        return Observation(RUNNING, "Running", "the trainer is running")
    return Observation(PENDING, JOB_CREATED, "the Job was created; waiting for its pod to start")


def _after_oom(pods: Sequence[Mapping[str, Any]]) -> str:
    """`` (attempt 2 after running out of memory: ...)`` when an earlier pod planned an out-of-memory fallback."""
    for t in _terminations(pods):
        term = contract.TerminationMessage.parse(t.get("message"))
        if term is not None and term.oom_fallback is not None:
            f = term.oom_fallback
            return (
                f" (attempt {f.attempt} after running out of memory: {f.to_loss} with mini-batch "
                f"{f.mini_batch_size} instead of {f.from_loss})"
            )
    return ""


def _unschedulable(pod: Mapping[str, Any]) -> Observation | None:
    """The scheduler found no node for the pod (``PodScheduled=False, reason=Unschedulable``)."""
    for c in _get(pod, "status", "conditions") or []:
        if c.get("type") == "PodScheduled" and c.get("status") == "False" and c.get("reason") == UNSCHEDULABLE:
            said = str(c.get("message") or "no node can run it")
            return Observation(
                PENDING,
                UNSCHEDULABLE,
                f"the trainer pod cannot be scheduled yet: {said} (waiting: a cluster autoscaler may add a node; "
                "otherwise lower spec.resources (gpus, cpu, memory) or change spec.scheduling "
                "(nodeSelector, tolerations, priorityClassName))",
            )
    return None


def pods_missing(
    job: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
    age: float,
    grace: float = NO_POD_GRACE,
) -> Observation | None:
    """Why a started Job has no pod: the Job controller's newest ``FailedCreate`` Event, or none past ``grace``.

    ``events`` are the Job's Events (oldest first), ``age`` the seconds since the Job was created or
    resumed. None while the Job has a pod, is suspended or finished, or it is too early to say.
    """
    if pods or _get(job, "spec", "suspend") or _job_condition(job, "Complete", "Failed", "SuccessCriteriaMet"):
        return None
    if (_get(job, "status", "active") or 0) > 0:
        return None
    refused = [e for e in events if e.get("reason") == "FailedCreate"]
    if refused:
        said = str(refused[-1].get("message") or "the Job controller could not create it")
        return Observation(
            PENDING,
            POD_CREATION_REFUSED,
            f"the trainer pod cannot be created: {said} (the Job controller keeps trying; fix the quota, "
            "LimitRange, PriorityClass or policy it names, or change spec.resources)",
        )
    if age >= grace:
        return Observation(
            PENDING,
            POD_CREATION_REFUSED,
            f"the Job has had no pod for {int(age)} s and the Job controller gave no reason: check the cluster's "
            "controllers and admission webhooks",
        )
    return None


def _failure(job: Mapping[str, Any], cond: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> Observation:
    finished = _get(job, "status", "completionTime") or cond.get("lastTransitionTime")
    job_reason = str(cond.get("reason") or "")
    job_msg = str(cond.get("message") or "")
    if job_reason == DEADLINE_EXCEEDED:
        limit = _get(job, "spec", "activeDeadlineSeconds")
        return Observation(FAILED, DEADLINE_EXCEEDED, f"the run took longer than {limit}s (activeDeadlineSeconds)")
    # The cause first: a node killed for memory, then a rank's own verdict, then an exit code that says one.
    latest = _latest_terminations(pods)
    if any(t.get("reason") == "OOMKilled" for t in latest):
        return Observation(FAILED, contract.Reason.OOM.value, _oom_message(job), None, finished)
    for t in latest:
        term = contract.TerminationMessage.parse(t.get("message"))
        if term is not None and term.outcome == "Failed" and term.oom_fallback is not None:
            # The trainer planned a cheaper attempt that the Job will not make.
            more = f"; no attempt is left (spec.runPolicy.backoffLimit {_get(job, 'spec', 'backoffLimit')})"
            return Observation(FAILED, term.reason, term.message + more, term, finished)
        if term is not None and term.outcome == "Failed":
            return Observation(FAILED, term.reason, term.message, term, finished)
    for t in latest:
        code = t.get("exitCode")
        if isinstance(code, int) and code in _EXIT_CODE_REASONS:
            return Observation(FAILED, _EXIT_CODE_REASONS[code], f"the trainer exited with code {code}", None, finished)
    if job_reason == BACKOFF_LIMIT_EXCEEDED:
        limit = _get(job, "spec", "backoffLimit")
        return Observation(
            FAILED, BACKOFF_LIMIT_EXCEEDED, f"the trainer failed {limit} retries: {job_msg}", None, finished
        )
    return Observation(FAILED, job_reason or JOB_FAILED, job_msg or "the Job failed", None, finished)


def _oom_message(job: Mapping[str, Any]) -> str:
    containers = _get(job, "spec", "template", "spec", "containers") or [{}]
    limit = _get(containers[0], "resources", "limits", "memory")
    return f"the trainer was killed for exceeding its memory limit ({limit}): raise spec.resources.memory"


def set_condition(
    conditions: Sequence[Mapping[str, Any]],
    ctype: str,
    status: str,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """Conditions with ``ctype`` set; ``lastTransitionTime`` moves only when the status flips."""
    out: list[dict[str, Any]] = []
    found = False
    for c in conditions:
        if c.get("type") != ctype:
            out.append(dict(c))
            continue
        found = True
        ltt = c.get("lastTransitionTime") if c.get("status") == status and c.get("lastTransitionTime") else now
        out.append(_condition(ctype, status, reason, message, generation, str(ltt)))
    if not found:
        out.append(_condition(ctype, status, reason, message, generation, now))
    return out


def _condition(ctype: str, status: str, reason: str, message: str, generation: int, since: str) -> dict[str, Any]:
    condition = Condition.model_validate(
        {
            "type": ctype,
            "status": status,
            "reason": reason,
            "message": _clip(message),
            "lastTransitionTime": since,
            "observedGeneration": generation,
        }
    )
    return condition.to_status()


def reusable(
    runs: Sequence[Mapping[str, Any]], training_digest: str, data_digest: str | None = None
) -> contract.ModelReuse | None:
    """The newest finished run with the same training digest, trained on the same data listing (the probe's
    digest, when spec.retrain.onDataChange knows one), whose trained weights were kept (it succeeded, or its
    model was rejected by the gate): a new generation re-measures and re-gates them, no training. Pure."""
    for r in runs:  # stored records, read as leniently as they were written over the versions
        kept = (r.get("artifacts") or {}).get("trainedModel")
        same_data = r.get("dataDigest") == data_digest
        if r.get("trainingDigest") == training_digest and same_data and kept and r.get("reason") in REGATABLE:
            return contract.ModelReuse(run_id=str(r.get("id")), uri=str(kept))
    return None


#: Run outcomes whose trained model a re-gate may reuse.
REGATABLE = frozenset({"Succeeded", "PromotionRejected"})


def _history_entry(run: CurrentRun, term: contract.TerminationMessage | None) -> RunRecord:
    """The record of a finished run in ``status.runs``: its identity and phase, and the trainer's summary."""
    entry = RunRecord.model_validate(run.model_dump(exclude={"spec_hash"}))
    if term is None:
        return entry
    figures: dict[str, Any] = {}
    if term.headline is not None:
        h = term.headline
        figures = dict(
            primary_metric=h.primary_metric, dimension=h.dimension, base=h.base, finetuned=h.finetuned, gain=h.gain
        )
    return entry.model_copy(
        update=dict(
            **figures,
            artifacts=term.artifacts,
            generated_data=term.generation,  # format documents: the pairs it trained on
            guards=term.guards or None,  # evaluation.guards: each set's figures, and whether it passed
            oom_fallback=term.oom_fallback,  # the loss was switched after running out of memory
            **_evidence(term),
            registered_version=term.registry.version if term.registry else None,  # spec.output.registry
        )
    )


def _evidence(term: contract.TerminationMessage) -> dict[str, Any]:
    """A run's baselines (short form), merge ratio and the run whose model it re-gated, for status."""
    return {"baselines": term.baselines, "merge_ratio": term.merge_ratio, "reused_model_from": term.reused_model_from}


def _record(runs: list[dict[str, Any]], entry: RunRecord) -> list[dict[str, Any]]:
    """The history with ``entry`` first (at most HISTORY_LIMIT): stored records pass through as they are."""
    if any(r.get("id") == entry.id for r in runs):
        return runs  # a finished run's record never changes
    return [entry.to_status(), *runs][:HISTORY_LIMIT]


@dataclass
class _Fold:
    """What :func:`compute_status` builds up: the new status, its run history (stored records as they are, new
    ones made as :class:`~eft_api.status.RunRecord`) and the Events to post."""

    status: dict[str, Any]
    runs: list[dict[str, Any]]
    events: list[Event]


def compute_status(
    prev: Mapping[str, Any] | None,
    *,
    generation: int,
    run: Mapping[str, Any] | None,
    observation: Observation | None = None,
    superseded: Mapping[str, Any] | None = None,
    superseded_by: str = "",
    problem: Problem | None = None,
    now: str,
) -> tuple[dict[str, Any], list[Event]]:
    """The new status and the Events to post.

    ``run`` is the current run's identity (id, generation, jobName, specHash, outputUri, startTime) with the
    phase status last recorded, if any; ``observation`` what its Job shows now; ``superseded`` a run of an
    older generation stopped in this pass; ``problem`` what keeps the latest generation from running. The runs
    are folded as :class:`~eft_api.status.CurrentRun` and :class:`~eft_api.status.RunRecord`.
    """
    prev = dict(prev or {})
    fold = _Fold(
        status={k: v for k, v in prev.items() if k != "kopf"},
        runs=[dict(r) for r in prev.get("runs") or []],
        events=[],
    )
    old = CurrentRun.model_validate(superseded) if superseded is not None else None
    if old is not None:
        _fold_superseded(fold, old, superseded_by, now)
    prev_run = CurrentRun.model_validate(prev["currentRun"]) if prev.get("currentRun") else None
    new_run = CurrentRun.model_validate(run) if run is not None else None
    if new_run is not None and old is not None and old.id == new_run.id:
        update = {"phase": SUPERSEDED, "reason": SUPERSEDED, "message": superseded_by}
        new_run = new_run.model_copy(update={**update, "completion_time": new_run.completion_time or now})
    elif new_run is not None and observation is not None:
        new_run = _fold_observation(fold, prev_run, new_run, observation, now)
    if new_run is not None:
        fold.status["currentRun"] = new_run.to_status()
    if fold.runs:
        fold.status["runs"] = fold.runs
    fold.status["observedGeneration"] = generation
    states = _condition_states(problem, new_run)
    if states is None:
        return fold.status, fold.events
    conds: list[dict[str, Any]] = [dict(c) for c in prev.get("conditions") or []]
    if problem is not None and _stall_changed(conds, problem):
        fold.events.append(Event("Warning", problem.reason, _clip(problem.message)))
    message, triples = states
    for ctype, cstatus, creason in triples:
        conds = set_condition(conds, ctype, cstatus, creason, message, generation, now)
    fold.status["conditions"] = conds
    return fold.status, fold.events


def _fold_superseded(fold: _Fold, superseded: CurrentRun, superseded_by: str, now: str) -> None:
    """Record a run of an older generation, stopped in this pass, as ``Superseded`` (with an Event, once)."""
    update = {"phase": SUPERSEDED, "reason": SUPERSEDED, "message": superseded_by, "completion_time": now}
    entry = superseded.model_copy(update=update)
    if not any(r.get("id") == entry.id for r in fold.runs):
        message = f"stopped run {entry.id} (Job {entry.job_name}): {superseded_by}"
        fold.events.append(Event("Normal", "RunSuperseded", message))
    fold.runs = _record(fold.runs, _history_entry(entry, None))


def _fold_observation(
    fold: _Fold, prev_run: CurrentRun | None, new_run: CurrentRun, observation: Observation, now: str
) -> CurrentRun:
    """The current run as its Job shows it now; a finished run's record is never rewritten."""
    same = prev_run is not None and prev_run.id == new_run.id
    if prev_run is not None and same and prev_run.phase in TERMINAL_PHASES:
        return prev_run  # finished runs are history: never rewritten
    terminal = observation.phase in TERMINAL_PHASES
    finished = (new_run.completion_time or observation.completion_time or now) if terminal else None
    observed = {"phase": observation.phase, "reason": observation.reason, "message": _clip(observation.message)}
    new_run = new_run.model_copy(update={**observed, "completion_time": finished})
    if not same:
        fold.status.pop("trainerStatus", None)  # the progress of an earlier run
        message = f"created Job {new_run.job_name} for generation {new_run.generation} (run {new_run.id})"
        fold.events.append(Event("Normal", "RunCreated", message))
    old_phase, old_reason = (prev_run.phase, prev_run.reason) if prev_run is not None and same else (None, None)
    fold.events.extend(_phase_events(old_phase, old_reason, new_run, observation))
    if terminal:
        fold.runs = _record(fold.runs, _history_entry(new_run, observation.termination))
        done = progress.finished(fold.status.get("trainerStatus"), observation.phase == SUCCEEDED, now)
        if done is not None:
            fold.status["trainerStatus"] = done
    term = observation.termination
    if observation.phase == SUCCEEDED and term is not None and term.headline is not None:
        _fold_results(fold, new_run.id, term.headline, term)
    return new_run


def _fold_results(fold: _Fold, run_id: str, h: contract.Headline, term: contract.TerminationMessage) -> None:
    """``results`` (base vs fine-tuned headline) and ``artifacts`` of a run that succeeded."""
    reindex = term.index.reindex_required if term.index is not None else None
    results = Results(
        run_id=run_id,
        primary_metric=h.primary_metric,
        dimension=h.dimension,
        base=h.base,
        finetuned=h.finetuned,
        gain=h.gain,
        reindex_required=reindex,
        **_evidence(term),
        registered_version=term.registry.version if term.registry else None,
    )
    fold.status["results"] = results.to_status()
    if term.artifacts is not None:
        fold.status["artifacts"] = term.artifacts.model_dump(mode="json", by_alias=True, exclude_none=True)


def _stall_changed(conds: Sequence[Mapping[str, Any]], problem: Problem) -> bool:
    """Whether ``Stalled`` does not say ``problem`` yet (a Warning Event is due)."""
    old = next((c for c in conds if c.get("type") == "Stalled"), {})
    return bool(
        old.get("status") != "True"
        or old.get("reason") != problem.reason
        or old.get("message") != _clip(problem.message)
    )


def _condition_states(problem: Problem | None, run: CurrentRun | None) -> tuple[str, list[tuple[str, str, str]]] | None:
    """The message and (type, status, reason) of ``Ready``, ``Reconciling`` and ``Stalled``; None: leave them."""
    if problem is not None:
        reason, message = problem.reason, problem.message
        flags = ("False", "False", "True")
    elif run is not None:
        phase, reason = str(run.phase), str(run.reason or run.phase)
        message = run.message or ""
        if phase == SUCCEEDED:
            flags = ("True", "False", "False")
        elif phase in (FAILED, SUPERSEDED) or reason in BLOCKING_REASONS:
            flags = ("False", "False", "True")
        else:
            flags = ("False", "True", "False")
    else:
        return None
    return message, [
        (ctype, flag, reason) for ctype, flag in zip(("Ready", "Reconciling", "Stalled"), flags, strict=True)
    ]


def _phase_events(old_phase: str | None, old_reason: str | None, run: CurrentRun, obs: Observation) -> list[Event]:
    job = run.job_name
    if obs.phase == old_phase:
        if obs.reason != old_reason and obs.reason in NOTICE_REASONS:
            return [Event("Warning", obs.reason, obs.message)]
        return []
    if obs.phase == RUNNING:
        return [Event("Normal", "RunStarted", f"Job {job} started: {obs.message}")]
    if obs.phase == SUCCEEDED:
        return [Event("Normal", "RunSucceeded", f"run {run.id} succeeded: {obs.message}")]
    if obs.phase == FAILED:
        return [Event("Warning", "RunFailed", f"run {run.id} failed: {obs.reason}: {obs.message}")]
    if obs.phase == SUSPENDED:
        return [Event("Normal", "RunSuspended", f"Job {job} suspended (spec.runPolicy.suspend is true)")]
    if obs.phase == QUEUED:
        return [Event("Normal", "RunQueued", obs.message)]
    if obs.reason in NOTICE_REASONS:
        return [Event("Warning", obs.reason, obs.message)]
    if old_phase in (SUSPENDED, QUEUED):
        return [Event("Normal", "RunResumed", f"Job {job} resumed")]
    return []


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON merge patch (RFC 7386) that turns ``old`` into ``new``; empty when they are equal."""
    patch: dict[str, Any] = {}
    for key in old:
        if key not in new:
            patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            sub = merge_patch(before, value)
            if sub:
                patch[key] = sub
        elif before != value or key not in old:
            patch[key] = value
    return patch
