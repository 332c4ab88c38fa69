"""Retraining without a spec edit: the spec of ``spec.retrain``, ``spec.notify`` and ``spec.output.registry``,
and the pure decisions of when a new run starts (issue 22).

* :func:`check_cron`, :func:`check_time_zone`, :func:`parse_duration`: the typed model's checks of
  ``spec.retrain.schedule``, ``timeZone`` and ``onDataChange.checkInterval`` (the CRD checks the same shapes
  with patterns and CEL; the time-zone database and cron ranges only here and in ``eft validate``).
* :func:`schedule_check`: the most recent unmet schedule time, as the CronJob controller finds it (at most one
  catch-up run for any number of missed times, none older than ``startingDeadlineSeconds``).
* :func:`decide`: which trigger, if any, starts a run now (manual, then schedule, then data change), what
  happens to an active run (``concurrencyPolicy``), and the new ``status.retrain`` block.
* :func:`run_salt`: what a trigger adds to the run id (the trigger, its time and the data digest), empty
  when no retrain field is in play, so existing resources keep their run ids.

Pure: no I/O, no clock (``now`` is an argument).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import zoneinfo
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any, Literal

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints, field_validator
from pydantic.alias_generators import to_camel

#: The annotation that asks for a run now (any new value), as ``kubectl rollout restart`` does for Deployments.
RETRAIN_ANNOTATION = "finetune.eft.dev/retrain"

_MIN = r"([0-5]?[0-9])"
_HOUR = r"([01]?[0-9]|2[0-3])"
_DOM = r"([1-9]|[12][0-9]|3[01])"
_MONTH = r"([1-9]|1[0-2]|(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec))"
_DOW = r"([0-7]|(?i:sun|mon|tue|wed|thu|fri|sat))"


def _cron_field(value: str) -> str:
    item = rf"(\*|{value}(-{value})?)(/[1-9][0-9]?)?"
    return rf"{item}(,{item})*"


#: A cron expression as the CRD accepts it: five fields in range, or a macro (@daily, ...).
CRON_PATTERN = (
    r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|"
    + r" +".join(_cron_field(f) for f in (_MIN, _HOUR, _DOM, _MONTH, _DOW))
    + r")$"
)
TIME_ZONE_PATTERN = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}$"
#: A duration as Go (and Flux) writes it: 90s, 15m, 1h30m.
DURATION_PATTERN = r"^([0-9]{1,6}(h|m|s))+$"
MIN_CHECK_INTERVAL = dt.timedelta(minutes=1)
MAX_CHECK_INTERVAL = dt.timedelta(days=30)
HTTP_URL = r"^https?://[^\s/]+(/[^\s]*)?$"
MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
ALIAS = r"^[A-Za-z0-9_-]+$"

PATTERN_HINTS = {
    CRON_PATTERN: "must be a cron expression of five fields (minute hour day-of-month month day-of-week, each in "
    "range) such as '0 2 * * *', or @hourly, @daily, @weekly, @monthly or @yearly",
    TIME_ZONE_PATTERN: "must be a time zone of the tz database such as Europe/Berlin or UTC",
    DURATION_PATTERN: "must be a duration such as 15m, 1h or 1h30m (units h, m, s)",
}


def check_cron(expr: str) -> str:
    """A cron expression croniter (and so the operator) can follow; raises ValueError saying what is wrong."""
    if not re.match(CRON_PATTERN, expr) or not croniter.is_valid(expr):
        raise ValueError(PATTERN_HINTS[CRON_PATTERN])
    return expr


def check_time_zone(name: str) -> str:
    if not re.match(TIME_ZONE_PATTERN, name):
        raise ValueError(PATTERN_HINTS[TIME_ZONE_PATTERN])
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not a time zone of the tz database (such as Europe/Berlin or UTC)") from None
    return name


def parse_duration(text: str) -> dt.timedelta:
    """``15m``, ``1h30m``, ``90s`` -> timedelta; raises ValueError on anything else."""
    if not re.match(DURATION_PATTERN, text):
        raise ValueError(PATTERN_HINTS[DURATION_PATTERN])
    unit = {"h": 3600, "m": 60, "s": 1}
    return dt.timedelta(seconds=sum(int(n) * unit[u] for n, u in re.findall(r"([0-9]+)(h|m|s)", text)))


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class ConcurrencyPolicy(StrEnum):
    FORBID = "Forbid"
    REPLACE = "Replace"


class OnDataChange(_Model):
    enabled: StrictBool = False
    check_interval: Annotated[str, StringConstraints(pattern=DURATION_PATTERN, max_length=32)] = "1h"

    @field_validator("check_interval")
    @classmethod
    def _interval(cls, value: str) -> str:
        span = parse_duration(value)
        if not MIN_CHECK_INTERVAL <= span <= MAX_CHECK_INTERVAL:
            raise ValueError("must be at least 1m and at most 720h (the probe lists the whole corpus each time)")
        return value

    @property
    def interval(self) -> dt.timedelta:
        return parse_duration(self.check_interval)


class RetrainSpec(_Model):
    schedule: Annotated[str, StringConstraints(pattern=CRON_PATTERN, max_length=128)] | None = None
    time_zone: Annotated[str, StringConstraints(pattern=TIME_ZONE_PATTERN, max_length=64)] | None = None
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.FORBID
    starting_deadline_seconds: Annotated[int, Field(strict=True, ge=10, le=31536000)] | None = None
    on_data_change: OnDataChange = Field(default_factory=OnDataChange)

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return value if value is None else check_cron(value)

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return value if value is None else check_time_zone(value)


class NotifyEvent(StrEnum):
    RUN_SUCCEEDED = "RunSucceeded"
    RUN_FAILED = "RunFailed"
    PROMOTION_REJECTED = "PromotionRejected"


class NotifyTarget(_Model):
    url: Annotated[str, StringConstraints(pattern=HTTP_URL, max_length=512)]
    events: Annotated[list[NotifyEvent], Field(min_length=1, max_length=3)] = Field(
        default_factory=lambda: list(NotifyEvent)
    )


DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class SecretName(_Model):
    name: Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN, max_length=253)]


class MlflowRegistry(_Model):
    tracking_uri: Annotated[str, StringConstraints(pattern=HTTP_URL, max_length=512)]
    model_name: Annotated[str, StringConstraints(pattern=MODEL_NAME, max_length=256)]
    alias: Annotated[str, StringConstraints(pattern=ALIAS, max_length=64)] = "champion"
    register_rejected: StrictBool = False
    credentials_secret: SecretName | None = None

    @field_validator("alias")
    @classmethod
    def _alias(cls, value: str) -> str:
        if value == "latest" or re.match(r"^[vV][0-9]+$", value):
            raise ValueError("must not be 'latest' nor v<number> (MLflow reserves them)")
        return value


class RegistrySpec(_Model):
    mlflow: MlflowRegistry


# ------------------------------------------------------------------------------------------- schedule


def _zone(name: str | None) -> dt.tzinfo:
    return zoneinfo.ZoneInfo(name) if name else dt.UTC


def next_schedule_time(cron: str, tz: str | None, after: dt.datetime) -> dt.datetime:
    """The first schedule time strictly after ``after`` (aware, returned in UTC)."""
    it = croniter(cron, after.astimezone(_zone(tz)))
    nxt: dt.datetime = it.get_next(dt.datetime)
    return nxt.astimezone(dt.UTC)


@dataclass(frozen=True)
class ScheduleCheck:
    #: The most recent unmet schedule time to run now (None: nothing due, or due too late).
    due: dt.datetime | None
    #: The first schedule time after now.
    next: dt.datetime
    #: Unmet schedule times found since ``last`` (``due`` is the newest of them).
    missed: int
    #: The newest unmet time was older than startingDeadlineSeconds: skipped.
    too_late: dt.datetime | None = None


MAX_MISSED = 100


def schedule_check(
    cron: str, tz: str | None, *, last: dt.datetime, now: dt.datetime, deadline: int | None
) -> ScheduleCheck:
    """What the CronJob controller does: from ``last`` (the last schedule time acted on, or the resource's
    creation), the schedule times up to ``now``; the newest is due unless older than ``deadline`` seconds
    (then it is ``too_late``, to be skipped and said). Counting stops at :data:`MAX_MISSED`."""
    newest: dt.datetime | None = None
    missed = 0
    t = next_schedule_time(cron, tz, last)
    while t <= now and missed < MAX_MISSED:
        newest, missed = t, missed + 1
        t = next_schedule_time(cron, tz, t)
    if missed >= MAX_MISSED:  # the rest is older than it matters: jump to the schedule around now
        newest = _previous_time(cron, tz, now)
        t = next_schedule_time(cron, tz, now)
    if newest is not None and deadline is not None and newest + dt.timedelta(seconds=deadline) < now:
        return ScheduleCheck(None, t, missed, too_late=newest)
    return ScheduleCheck(newest, t, missed)


def _previous_time(cron: str, tz: str | None, now: dt.datetime) -> dt.datetime:
    it = croniter(cron, now.astimezone(_zone(tz)) + dt.timedelta(seconds=1))
    prev: dt.datetime = it.get_prev(dt.datetime)
    return prev.astimezone(dt.UTC)


# ------------------------------------------------------------------------------------------- decision

Trigger = Literal["specChange", "schedule", "dataChange", "manual"]


@dataclass(frozen=True)
class RunTrigger:
    """Why a run runs: its kind, what made it unique (a schedule time, an annotation value) and the data digest."""

    kind: Trigger = "specChange"
    key: str = ""
    data_digest: str | None = None

    def salt(self) -> str:
        """What the trigger adds to the run id: nothing for a spec change without a known data digest."""
        if self.kind == "specChange" and not self.data_digest:
            return ""
        return f"{self.kind}:{self.key}:{self.data_digest or ''}"

    def record(self) -> dict[str, Any]:
        """The fields a run entry in status carries."""
        out: dict[str, Any] = {"trigger": self.kind}
        if self.data_digest:
            out["dataDigest"] = self.data_digest
        if self.kind != "specChange":
            out["triggerKey"] = self.key
        return out


def run_salt(trigger: RunTrigger | None) -> str:
    return "" if trigger is None else trigger.salt()


@dataclass(frozen=True)
class World:
    """What :func:`decide` needs to know, read from the resource and its status."""

    spec: RetrainSpec | None
    now: dt.datetime
    created: dt.datetime
    #: status.retrain as last written.
    status: dict[str, Any]
    #: The annotation's value (None: absent).
    manual: str | None = None
    #: A run of the current generation is going.
    active: bool = False
    #: Data digest of the latest run (None: unknown).
    run_digest: str | None = None


@dataclass
class Decision:
    start: RunTrigger | None = None
    #: Stop the active run (concurrencyPolicy Replace) for ``start``.
    replace: bool = False
    status: dict[str, Any] = field(default_factory=dict)
    #: When to look again (the next schedule time), or None.
    wake_at: dt.datetime | None = None
    #: (type, reason, message) of the Events to post.
    events: list[tuple[str, str, str]] = field(default_factory=list)


def rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def decide(world: World) -> Decision:
    """Which trigger starts a run now: a new manual value, then a due schedule time, then a new data digest."""
    spec, st = world.spec or RetrainSpec(), dict(world.status)
    out = Decision(status=st)
    latest = st.get("lastDataDigest")
    digest = latest if spec.on_data_change.enabled else None
    if world.manual is not None and world.manual != st.get("lastManual") and _may_start(world, spec, out):
        st["lastManual"] = world.manual
        _start(out, RunTrigger("manual", world.manual, digest), world)
    if spec.schedule:
        _schedule(world, spec, out, digest)
    changed = digest is not None and world.run_digest is not None and digest != world.run_digest
    if changed and digest is not None and _may_start(world, spec, out):
        _start(out, RunTrigger("dataChange", digest, digest), world)
    return out


def _may_start(world: World, spec: RetrainSpec, out: Decision) -> bool:
    """A manual or data trigger starts a run unless one is going under Forbid: then it waits for that run's end."""
    if out.start is not None:
        return False
    return not world.active or spec.concurrency_policy is ConcurrencyPolicy.REPLACE


def _start(out: Decision, trigger: RunTrigger, world: World) -> None:
    out.start = trigger
    out.replace = world.active
    out.status["lastTrigger"] = trigger.kind
    out.status["lastTriggerTime"] = rfc3339(world.now)


def _schedule(world: World, spec: RetrainSpec, out: Decision, digest: str | None) -> None:
    assert spec.schedule is not None
    st = out.status
    last = parse_time(st.get("lastScheduleTime")) or world.created
    check = schedule_check(
        spec.schedule, spec.time_zone, last=last, now=world.now, deadline=spec.starting_deadline_seconds
    )
    st["nextScheduleTime"] = rfc3339(check.next)
    out.wake_at = check.next
    if check.too_late is not None:
        st["lastScheduleTime"] = rfc3339(check.too_late)
        _skip(out, f"missed schedule time {rfc3339(check.too_late)} by more than startingDeadlineSeconds")
        return
    if check.due is None:
        return
    when = rfc3339(check.due)
    if out.start is not None:
        st["lastScheduleTime"] = when  # a manual run in the same pass serves the schedule too
        return
    if world.active and spec.concurrency_policy is ConcurrencyPolicy.FORBID:
        st["lastScheduleTime"] = when
        _skip(out, f"schedule time {when}: a run is still going (concurrencyPolicy Forbid)")
        return
    if spec.on_data_change.enabled and digest and digest == world.run_digest:
        st["lastScheduleTime"] = when
        _skip(out, f"schedule time {when}: the data has not changed since the last run (digest {digest[:12]})")
        return
    st["lastScheduleTime"] = when
    _start(out, RunTrigger("schedule", when, digest), world)


def _skip(out: Decision, message: str) -> None:
    out.status["skipped"] = int(out.status.get("skipped") or 0) + 1
    out.events.append(("Normal", "RetrainSkipped", message))


# ------------------------------------------------------------------------------------------- data probe


def data_uris(spec: Any) -> list[str]:
    """Every data URI of a spec (an EmbeddingFinetuneSpec): train (or documents), eval, guards, pretrain data."""
    uris = [spec.data.train.uri]
    if spec.data.eval.uri:
        uris.append(spec.data.eval.uri)
    uris += [g.uri for g in spec.evaluation.guards]
    if spec.training.pretrain is not None:
        uris.append(spec.training.pretrain.data.uri)
    return sorted(set(uris))


def data_digest(listing: dict[str, list[tuple[str, int, str]]]) -> str:
    """The digest of a data listing: for each URI, its objects' (key, size, ETag), in order."""
    doc = {uri: sorted(objects) for uri, objects in sorted(listing.items())}
    return hashlib.sha256(json.dumps(doc, separators=(",", ":")).encode()).hexdigest()[:32]


class ProbeReport(_Model):
    """What the data probe leaves in its termination message (the operator reads it from the pod status)."""

    outcome: Literal["Succeeded", "Failed"]
    reason: str
    message: str = ""
    digest: str | None = None
    objects: int = 0
    bytes: int = 0

    @classmethod
    def parse(cls, text: str | None) -> ProbeReport | None:
        if not text:
            return None
        try:
            return cls.model_validate_json(text)
        except ValueError:
            return None
