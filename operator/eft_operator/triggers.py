"""The operator's side of ``spec.retrain`` (issue 22): the world read into :class:`eft_api.retrain.World`, the
decision folded into the run and ``status.retrain``, and the timers that wake a resource at its next schedule
time (or data check).

The decisions themselves are pure (:mod:`eft_api.retrain`); this module only reads the resource's metadata
and status and keeps asyncio timers. It never reads a Secret.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from eft_api import contract
from eft_api.retrain import (
    RETRAIN_ANNOTATION,
    Decision,
    ProbeReport,
    RunTrigger,
    World,
    decide,
    next_schedule_time,
    parse_time,
    rfc3339,
)
from eft_api.spec import EmbeddingFinetuneSpec
from eft_operator import children
from eft_operator.config import Settings
from eft_operator.probe_render import probe_name, render_probe
from eft_operator.render import Owner
from eft_operator.status import Event, set_condition

#: The condition that shows the data probe's last verdict (spec.retrain.onDataChange).
DATA_CHECKED = "DataChecked"

#: Longest single sleep of a timer: a far schedule time is approached in steps (clock changes, suspend).
MAX_SLEEP = 60.0


def in_play(body: Mapping[str, Any], spec: EmbeddingFinetuneSpec) -> bool:
    """Whether retraining concerns this resource at all (a spec.retrain block or the annotation)."""
    return spec.retrain is not None or _annotation(body) is not None


def _annotation(body: Mapping[str, Any]) -> str | None:
    value = ((body.get("metadata") or {}).get("annotations") or {}).get(RETRAIN_ANNOTATION)
    return str(value) if value is not None else None


def manual_pending(body: Mapping[str, Any]) -> bool:
    """Whether the retrain annotation holds a value no run has consumed yet (a pass would start one)."""
    value = _annotation(body)
    return value is not None and value != ((body.get("status") or {}).get("retrain") or {}).get("lastManual")


def plan(
    body: Mapping[str, Any],
    spec: EmbeddingFinetuneSpec,
    prev: Mapping[str, Any],
    now: str,
    active: bool,
    block: Mapping[str, Any] | None = None,
) -> Decision | None:
    """What the triggers want in a pass that keeps the current run (None: retraining is not in play).

    ``block`` is status.retrain as the data probe left it in this pass (default: as in ``prev``)."""
    if not in_play(body, spec):
        return None
    st = dict(block if block is not None else prev.get("retrain") or {})
    current = prev.get("currentRun") or {}
    clock = parse_time(now) or dt.datetime.now(dt.UTC)
    created = parse_time((body.get("metadata") or {}).get("creationTimestamp")) or clock
    started = parse_time(current.get("startTime"))
    if "lastScheduleTime" not in st and started is not None and started > created:
        st["lastScheduleTime"] = rfc3339(started)  # a schedule added later does not catch up on the past
    world = World(
        spec=spec.retrain,
        now=clock,
        created=created,
        status=st,
        manual=_annotation(body),
        active=active,
        run_digest=current.get("dataDigest") or st.get("baselineDigest"),
    )
    decision = decide(world)
    check = next_check(spec, st)
    if check is not None and (decision.wake_at is None or check < decision.wake_at):
        decision.wake_at = check
    return decision


def next_check(spec: EmbeddingFinetuneSpec, block: Mapping[str, Any]) -> dt.datetime | None:
    """When the data probe is due next (None: onDataChange is off, or a probe is in flight)."""
    if spec.retrain is None or not spec.retrain.on_data_change.enabled or (block.get("probe") or {}).get("jobName"):
        return None
    last = parse_time(block.get("lastCheckTime"))
    return None if last is None else last + spec.retrain.on_data_change.interval


def spec_change_trigger(spec: EmbeddingFinetuneSpec, prev: Mapping[str, Any]) -> RunTrigger | None:
    """The trigger of a run started by a spec change: it carries the data digest the probe last reported."""
    if spec.retrain is None or not spec.retrain.on_data_change.enabled:
        return None
    digest = (prev.get("retrain") or {}).get("lastDataDigest")
    return RunTrigger("specChange", "", str(digest)) if digest else None


def run_fields(trigger: RunTrigger | None, body: Mapping[str, Any], spec: EmbeddingFinetuneSpec) -> dict[str, Any]:
    """What a new run's status entry records about why it ran (nothing when retraining is not in play)."""
    if trigger is None:
        return {"trigger": "specChange"} if in_play(body, spec) else {}
    return trigger.record()


def fold_status(
    status: dict[str, Any],
    decision: Decision | None,
    started: RunTrigger | None,
    body: Mapping[str, Any],
    spec: EmbeddingFinetuneSpec,
    now: str,
) -> list[Event]:
    """Write ``status.retrain`` from the pass's decision (or a spec-change start) into ``status``; its Events."""
    if not in_play(body, spec):
        return []
    block = dict(decision.status if decision is not None else status.get("retrain") or {})
    if decision is None and started is not None:  # a new run for a spec change: it consumes the annotation
        block.update(lastTrigger="specChange", lastTriggerTime=now)
        manual = _annotation(body)
        if manual is not None:
            block["lastManual"] = manual
    if block:
        status["retrain"] = block
    error = (block.get("probe") or {}).get("lastError")
    if spec.retrain is not None and spec.retrain.on_data_change.enabled and block.get("lastCheckTime"):
        generation = int((body.get("metadata") or {}).get("generation") or 1)
        verdict = ("False", "ProbeFailed", str(error)) if error else ("True", "Checked", _checked(block))
        status["conditions"] = set_condition(status.get("conditions") or [], DATA_CHECKED, *verdict, generation, now)
    return [Event(*e) for e in (decision.events if decision is not None else [])]


def _checked(block: Mapping[str, Any]) -> str:
    probe = block.get("probe") or {}
    digest = str(block.get("lastDataDigest") or "")[:12]
    return f"listed {probe.get('objects', 0)} objects ({probe.get('bytes', 0)} bytes); data digest {digest}"


@dataclass(frozen=True)
class PassRetrain:
    """What one pass learned from the triggers: the decision (None: not in play) and the probe's Events."""

    decision: Decision | None
    events: list[Event]

    @property
    def start(self) -> RunTrigger | None:
        return self.decision.start if self.decision is not None else None


def fold(
    status: dict[str, Any],
    retrain: PassRetrain | None,
    new_run: bool,
    body: Mapping[str, Any],
    spec: EmbeddingFinetuneSpec,
    now: str,
) -> list[Event]:
    """:func:`fold_status` for a pass: status.retrain and the DataChecked condition; the Events to post."""
    decision = retrain.decision if retrain is not None else None
    events = list(retrain.events) if retrain is not None else []
    return events + fold_status(status, decision, RunTrigger() if new_run else None, body, spec, now)


def superseded_by(retrain: PassRetrain | None, spec_change: str) -> str:
    """Why a going run was stopped: a spec change, or a trigger under concurrencyPolicy Replace."""
    trigger = retrain.start if retrain is not None else None
    if trigger is None:
        return spec_change
    return f"a {trigger.kind} trigger started a new run (concurrencyPolicy Replace)"


class Timers:
    """One timer per resource, waking it at its next schedule time; re-armed after every pass.

    A timer sleeps in steps of at most ``max_sleep`` seconds and compares ``clock()`` with its time after
    each, so a clock that jumps (a suspended laptop, a test's clock) wakes it on time."""

    def __init__(self, clock: Callable[[], dt.datetime], max_sleep: float = MAX_SLEEP) -> None:
        self.clock = clock
        self.max_sleep = max_sleep
        self._tasks: dict[tuple[str, str], tuple[dt.datetime, asyncio.Task[None]]] = {}

    def arm(self, key: tuple[str, str], when: dt.datetime | None, wake: Callable[[], Awaitable[None]]) -> None:
        """Wake ``key`` at ``when`` (None: no timer). An existing timer for the same time stays."""
        old = self._tasks.get(key)
        if old is not None and when is not None and old[0] == when and not old[1].done():
            return
        self.cancel(key)
        if when is None:
            return
        task = asyncio.create_task(self._sleep_then(key, when, wake), name=f"retrain timer {key}")
        self._tasks[key] = (when, task)

    async def _sleep_then(self, key: tuple[str, str], when: dt.datetime, wake: Callable[[], Awaitable[None]]) -> None:
        while (left := (when - self.clock()).total_seconds()) >= 0:
            await asyncio.sleep(min(left + 0.2, self.max_sleep))  # past the time, not a hair before it
        entry = self._tasks.get(key)
        if entry is not None and entry[1] is asyncio.current_task():
            del self._tasks[key]
        await wake()

    def armed(self, key: tuple[str, str]) -> dt.datetime | None:
        entry = self._tasks.get(key)
        return entry[0] if entry is not None else None

    def cancel(self, key: tuple[str, str]) -> None:
        entry = self._tasks.pop(key, None)
        if entry is not None and entry[1] is not asyncio.current_task():
            entry[1].cancel()

    def close(self) -> None:
        for key in list(self._tasks):
            self.cancel(key)


def wake_at(
    retrain: PassRetrain | None, spec: EmbeddingFinetuneSpec, prev: Mapping[str, Any], now: str
) -> dt.datetime | None:
    """When to look again: the pass's decision says; a pass that started a run for a spec change has none,
    so the next schedule time (or data check) after now."""
    if retrain is not None and retrain.decision is not None:
        return retrain.decision.wake_at
    if spec.retrain is None:
        return None
    times = [next_check(spec, prev.get("retrain") or {})]
    if spec.retrain.schedule:
        times.append(next_schedule_time(spec.retrain.schedule, spec.retrain.time_zone, clock_of(now)))
    found = [t for t in times if t is not None]
    return min(found) if found else None


def clock_of(now: str) -> dt.datetime:
    return parse_time(now) or dt.datetime.now(dt.UTC)


# ------------------------------------------------------------------------------------------- data probe I/O


async def refresh_probe(
    client: children.Client,
    body: Mapping[str, Any],
    spec: EmbeddingFinetuneSpec,
    prev: Mapping[str, Any],
    now: str,
    settings: Settings,
) -> tuple[dict[str, Any], list[Event]]:
    """Read a finished probe (and delete it), or start one when due. Returns status.retrain and Events."""
    block = dict(prev.get("retrain") or {})
    if spec.retrain is None or not spec.retrain.on_data_change.enabled:
        return block, []
    meta = body.get("metadata") or {}
    namespace, name = str(meta.get("namespace")), str(meta.get("name"))
    flying = (block.get("probe") or {}).get("jobName")
    if flying:
        return await _read_probe(client, namespace, str(flying), block, prev, now)
    due = next_check(spec, block)
    clock = clock_of(now)
    if due is not None and clock < due:
        return block, []
    owner = Owner.of(namespace, name, str(meta.get("uid") or ""), int(meta.get("generation") or 1), spec)
    job = probe_name(name, clock, spec.retrain.on_data_change.interval)
    configmap, job_body = render_probe(owner, spec, settings, job)
    await client.ensure(configmap, owner.uid)
    await client.ensure(job_body, owner.uid)
    block["probe"] = {"jobName": job, "startTime": now}
    return block, []


async def _read_probe(
    client: children.Client, namespace: str, job: str, block: dict[str, Any], prev: Mapping[str, Any], now: str
) -> tuple[dict[str, Any], list[Event]]:
    found = await client.get("Job", namespace, job)
    finished = found is None or any(
        c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
        for c in (found.get("status") or {}).get("conditions") or []
    )
    if not finished:
        return block, []
    report = _report(await client.pods_of_run(namespace, job)) if found is not None else None
    await client.delete("Job", namespace, job)
    await client.delete("ConfigMap", namespace, job)
    block["lastCheckTime"] = now
    if report is None or report.outcome != "Succeeded" or not report.digest:
        why = f"{report.reason}: {report.message}" if report else "the probe Job ended without a report (or vanished)"
        block["probe"] = {"lastError": f"data probe {job} failed: {why}"[:1024]}
        return block, [Event("Warning", "DataCheckFailed", block["probe"]["lastError"])]
    block["probe"] = {"objects": report.objects, "bytes": report.bytes}
    current = prev.get("currentRun") or {}
    if not current.get("dataDigest") and not block.get("baselineDigest"):
        block["baselineDigest"] = report.digest  # the latest run trained on this data, as far as anyone knows
    changed = block.get("lastDataDigest") not in (None, report.digest)
    block["lastDataDigest"] = report.digest
    return block, ([Event("Normal", "DataChanged", f"data digest is now {report.digest[:12]}")] if changed else [])


def _report(pods: list[dict[str, Any]]) -> ProbeReport | None:
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            if cs.get("name") != contract.TRAINER_CONTAINER:
                continue
            terminated = (cs.get("state") or {}).get("terminated") or {}
            report = ProbeReport.parse(terminated.get("message"))
            if report is not None:
                return report
    return None
